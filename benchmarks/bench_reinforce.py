"""Wall-clock time to solve CartPole-v1: gradlab's REINFORCE against a plain NumPy REINFORCE.

Both run in this process, one after the other, on the same seeds, with the same algorithm and
hyperparameters (``agents.ReinforceConfig``'s defaults): a 4-32-2 tanh MLP softmax policy,
discounted reward-to-go (gamma 0.997), returns normalized over each batch of 8 episodes,
Adam at learning rate 0.03. "Solved" is gymnasium's definition: the mean return of the last
100 training episodes reaches the reward threshold (475). Time counts from constructing the
agent (building the networks and tracing the update count too). The NumPy agent is the floor:
hand-written forward and backward passes, one environment stepped in a plain loop, no
framework at all. Ours plays its 8 episodes in gymnasium's NumPy-vectorized CartPole, acts
through ``agents.policies.HostForward`` and learns through a compiled TensorFlow update; it
steps the environments that finished early until the batch's longest episode ends (their
steps count, their data is dropped).

    python benchmarks/bench_reinforce.py              # seeds 0-4, about 15 seconds
    python benchmarks/bench_reinforce.py --seeds 0    # quicker
    python benchmarks/bench_reinforce.py --profile    # where our agent's time goes (100,000
                                                      # steps after a warm-up)

What it measured is in the README (Benchmarks).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import harness
import numpy as np

from agents import Reinforce, ReinforceConfig

THRESHOLD, MAX_STEPS = 475.0, 400_000


class NumpyReinforce:
    """REINFORCE with a one-hidden-layer tanh MLP written out in NumPy, with our agent's
    hyperparameters (``ReinforceConfig``'s defaults), so that both run one algorithm."""

    def __init__(self, seed):
        config = ReinforceConfig()
        assert len(config.hidden_sizes) == 1 and config.activation == "tanh"
        hidden, self.rng = config.hidden_sizes[0], np.random.default_rng(seed)
        self.gamma, self.lr, self.batch = config.gamma, config.learning_rate, config.num_envs
        glorot = lambda n_in, n_out: (self.rng.uniform(-1, 1, (n_in, n_out))
                                      * np.sqrt(6 / (n_in + n_out)))
        self.params = [glorot(4, hidden), np.zeros(hidden), glorot(hidden, 2) * 0.01, np.zeros(2)]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def probs(self, obs):
        w1, b1, w2, b2 = self.params
        h = np.tanh(obs @ w1 + b1)
        logits = h @ w2 + b2
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return h, e / e.sum(-1, keepdims=True)

    def update(self, obs, actions, advantages):
        h, p = self.probs(obs)
        # d(-mean(logp * A))/dlogits = (p - onehot) * A / n
        dlogits = (p - np.eye(2)[actions]) * advantages[:, None] / len(actions)
        dh = dlogits @ self.params[2].T * (1 - h ** 2)
        grads = [obs.T @ dh, dh.sum(0), h.T @ dlogits, dlogits.sum(0)]
        self.t += 1
        for i, g in enumerate(grads):  # Adam, Keras defaults
            self.m[i] = 0.9 * self.m[i] + 0.1 * g
            self.v[i] = 0.999 * self.v[i] + 0.001 * g * g
            m_hat = self.m[i] / (1 - 0.9 ** self.t)
            v_hat = self.v[i] / (1 - 0.999 ** self.t)
            self.params[i] -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-7)

    def solve(self, seed):
        """Trains until solved; returns (seconds, steps), seconds None if never solved."""
        env = gym.make("CartPole-v1")
        recent, steps, start, first = [], 0, time.perf_counter(), True
        while steps < MAX_STEPS:
            batch_obs, batch_act, batch_ret = [], [], []
            for _ in range(self.batch):
                obs, _ = env.reset(seed=seed if first else None)
                first, rewards, done = False, [], False
                while not done:
                    action = int(self.rng.random() < self.probs(obs)[1][1])
                    batch_obs.append(obs)
                    batch_act.append(action)
                    obs, r, terminated, truncated, _ = env.step(action)
                    rewards.append(r)
                    done = terminated or truncated
                steps += len(rewards)
                g = 0.0  # discounted reward-to-go, accumulated backwards
                batch_ret.extend(reversed([g := r + self.gamma * g for r in reversed(rewards)]))
                recent.append(sum(rewards))
            ret = np.asarray(batch_ret)
            self.update(np.asarray(batch_obs), np.asarray(batch_act),
                        (ret - ret.mean()) / (ret.std() + 1e-8))
            if len(recent) >= 100 and np.mean(recent[-100:]) >= THRESHOLD:
                return time.perf_counter() - start, steps
        return None, steps


def solve_with_gradlab(seed):
    """Trains our agent until solved; returns (seconds, steps), seconds None if never."""
    start = time.perf_counter()  # from construction: model building and compiling count too
    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=seed))
    recent, result = [], {}

    def stop_when_solved(row):
        recent.extend(row["episode_returns"])
        if len(recent) >= 100 and np.mean(recent[-100:]) >= THRESHOLD:
            result.update(seconds=time.perf_counter() - start, steps=row["env_steps"])
            raise StopIteration

    agent.train(MAX_STEPS, callback=stop_when_solved)
    agent.close()
    return result.get("seconds"), result.get("steps", agent.env_steps)


def profile(steps: int = 100_000) -> None:
    """Prints where our agent's training time goes: ``cProfile`` by cumulative time, after a
    warm-up that compiles the acting and update functions, and the unprofiled time."""
    import cProfile
    import pstats

    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0))
    agent.train(5_000)  # compiles acting and updating
    start = time.perf_counter()
    agent.train(steps)
    print(f"unprofiled: {time.perf_counter() - start:.2f} s for {steps:,} steps")
    with cProfile.Profile() as profiler:
        agent.train(steps)
    agent.close()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--profile", action="store_true",
                        help="profile our agent over 100,000 steps instead of the race")
    args = parser.parse_args()
    if args.profile:
        return profile()
    harness.header("bench_reinforce", f"seconds and steps to solve CartPole-v1, seeds {args.seeds}")
    solvers = {"numpy": lambda seed: NumpyReinforce(seed).solve(seed),
               "gradlab": solve_with_gradlab}
    runs = {name: [] for name in solvers}  # (seconds, or None if unsolved; steps) per seed
    for seed in args.seeds:
        for name, solve in solvers.items():
            s, n = solve(seed)
            runs[name].append((s, n))
            print(f"  seed {seed}, {name}: {f'{s:.2f} s' if s else 'unsolved'}, {n:,} steps")
    print("median steps to solve (unsolved seeds as infinite): " + ", ".join(
        f"{name} {statistics.median(n if s else float('inf') for s, n in r):,.0f} "
        f"({sum(bool(s) for s, _ in r)}/{len(r)} solved)" for name, r in runs.items()))
    both = [i for i, pair in enumerate(zip(*runs.values())) if all(s for s, _ in pair)]
    if both:
        print("median seconds to solve, over the seeds both solved (a round is a seed):")
        harness.table({name: [r[i][0] for i in both] for name, r in runs.items()}, "numpy", "s")


if __name__ == "__main__":
    main()
