"""Wall-clock time to solve CartPole-v1: gradlab's REINFORCE against a plain NumPy REINFORCE.

Both run in this process, one after the other, on the same seeds, with the same algorithm:
a 4-32-2 tanh MLP softmax policy, discounted reward-to-go (gamma 0.99), returns normalized
over each batch of 16 episodes, Adam at learning rate 0.02. "Solved" is gymnasium's
definition: the mean return of the last 100 training episodes reaches the reward threshold
(475). The NumPy agent is the floor: hand-written forward and backward passes, one
environment stepped in a plain loop, no framework overhead. Ours acts through a compiled
TensorFlow function on a vector of 16 environments (gymnasium's NumPy-vectorized CartPole).

    python benchmarks/bench_reinforce.py              # seeds 0 1 2, a minute or two
    python benchmarks/bench_reinforce.py --seeds 0    # quicker
    python benchmarks/bench_reinforce.py --profile    # where our agent's time goes

Where the time goes (``--profile``: 100,000 CartPole steps with the default agent, after a
warm-up that compiles everything; 2 CPU cores, TensorFlow 2.21, gymnasium 1.x). Unprofiled,
the 100,000 steps take 1.0 to 1.1 s. Of that:

- the vector environment (16 CartPoles, gymnasium's NumPy implementation), stepped alone
  with fixed actions, takes 0.18 s for as many steps, about 17%; gymnasium's check that each
  batch of actions is valid is 6% of the profiled time;
- acting, one call of the compiled policy per vector step (about 6,500 calls), is about 50%
  of the profiled time, and the computation itself is only 14%: the rest is TensorFlow's
  Python path for calling a function (binding and converting the arguments, about 100 us
  per call), not the policy;
- the updates (tape, gradients, Adam; 13 to 22 of them) are at most 6%;
- the rest is the rollout's Python bookkeeping (stacking observations, masks, returns).

So a faster agent spends less per acting call (fewer or cheaper calls), not less per update:
the policy is too small for its computation to matter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

THRESHOLD = 475.0
MAX_STEPS = 400_000


class NumpyReinforce:
    """REINFORCE with a one-hidden-layer tanh MLP, written out in NumPy."""

    def __init__(self, seed, hidden=32, lr=0.02, gamma=0.99, episodes_per_update=16):
        self.rng = np.random.default_rng(seed)
        self.gamma, self.lr, self.batch = gamma, lr, episodes_per_update
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
        w1, b1, w2, b2 = self.params
        h, p = self.probs(obs)
        # d(-mean(logp * A))/dlogits = (p - onehot) * A / n
        dlogits = (p - np.eye(2)[actions]) * advantages[:, None] / len(actions)
        dh = dlogits @ w2.T * (1 - h ** 2)
        grads = [obs.T @ dh, dh.sum(0), h.T @ dlogits, dlogits.sum(0)]
        self.t += 1
        for i, g in enumerate(grads):  # Adam, Keras defaults
            self.m[i] = 0.9 * self.m[i] + 0.1 * g
            self.v[i] = 0.999 * self.v[i] + 0.001 * g * g
            m_hat = self.m[i] / (1 - 0.9 ** self.t)
            v_hat = self.v[i] / (1 - 0.999 ** self.t)
            self.params[i] -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-7)

    def solve(self, seed):
        env = gym.make("CartPole-v1")
        recent, steps, start, first = [], 0, time.perf_counter(), True
        while steps < MAX_STEPS:
            batch_obs, batch_act, batch_ret = [], [], []
            for _ in range(self.batch):
                obs, _ = env.reset(seed=seed if first else None)
                first = False
                rewards, done = [], False
                while not done:
                    _, p = self.probs(obs)
                    action = int(self.rng.random() < p[1])
                    batch_obs.append(obs)
                    batch_act.append(action)
                    obs, r, terminated, truncated, _ = env.step(action)
                    rewards.append(r)
                    done = terminated or truncated
                steps += len(rewards)
                g, returns = 0.0, []
                for r in reversed(rewards):
                    g = r + self.gamma * g
                    returns.append(g)
                batch_ret.extend(reversed(returns))
                recent.append(sum(rewards))
            ret = np.asarray(batch_ret)
            self.update(np.asarray(batch_obs), np.asarray(batch_act),
                        (ret - ret.mean()) / (ret.std() + 1e-8))
            if len(recent) >= 100 and np.mean(recent[-100:]) >= THRESHOLD:
                return time.perf_counter() - start, steps
        return None, steps


def solve_with_gradlab(seed):
    from agents import Reinforce, ReinforceConfig

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

    from agents import Reinforce, ReinforceConfig

    agent = Reinforce("CartPole-v1", ReinforceConfig(seed=0))
    agent.train(5_000)  # compiles acting and updating
    start = time.perf_counter()
    agent.train(steps)
    print(f"unprofiled: {time.perf_counter() - start:.2f} s for {steps:,} steps")
    profiler = cProfile.Profile()
    profiler.enable()
    agent.train(steps)
    profiler.disable()
    agent.close()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", action="store_true",
                        help="profile our agent over 100,000 steps instead of the race")
    args = parser.parse_args()
    if args.profile:
        profile()
        return
    import tensorflow as tf

    print(f"bench_reinforce: TensorFlow {tf.__version__}, gymnasium {gym.__version__}, "
          f"NumPy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"{'seed':>4} {'numpy s':>9} {'numpy steps':>12} {'gradlab s':>10} "
          f"{'gradlab steps':>14} {'ratio':>6}")
    numpy_times, ours_times = [], []
    for seed in args.seeds:
        numpy_s, numpy_steps = NumpyReinforce(seed).solve(seed)
        ours_s, ours_steps = solve_with_gradlab(seed)
        ratio = ours_s / numpy_s if numpy_s and ours_s else float("nan")
        fmt = lambda s: f"{s:9.2f}" if s else "  unsolved"
        print(f"{seed:>4} {fmt(numpy_s)} {numpy_steps:>12} {fmt(ours_s):>10} {ours_steps:>14} "
              f"{ratio:6.2f}")
        if numpy_s and ours_s:
            numpy_times.append(numpy_s)
            ours_times.append(ours_s)
    if numpy_times:
        n_med, o_med = statistics.median(numpy_times), statistics.median(ours_times)
        print(f"median seconds to solve: numpy {n_med:.2f}, gradlab {o_med:.2f}; "
              f"gradlab / numpy = {o_med / n_med:.2f}x")


if __name__ == "__main__":
    main()
