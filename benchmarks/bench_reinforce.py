"""Wall-clock time to solve CartPole-v1: gradlab's REINFORCE against a plain NumPy REINFORCE.

Both run in this process, one after the other, on the same seeds, with the same algorithm and
hyperparameters (``agents.ReinforceConfig``'s defaults): a 4-32-2 tanh MLP softmax policy,
discounted reward-to-go (gamma 0.997), returns normalized over each batch of 8 episodes,
Adam at learning rate 0.03. "Solved" is gymnasium's definition: the mean return of the last
100 training episodes reaches the reward threshold (475). Time counts from constructing the
agent (building the networks and tracing the update count too). The NumPy agent is the floor:
hand-written forward and backward passes, one environment stepped in a plain loop, no
framework at all. Ours plays its 8 episodes in gymnasium's NumPy-vectorized CartPole, acts
through ``agents.policies.HostForward`` and learns through a compiled TensorFlow update.
Ours steps the environments that finished early until the batch's longest episode ends (their
steps count, their data is dropped: 12-28% of its steps over seeds 0-39, median 16%); the
NumPy agent wastes none.

    python benchmarks/bench_reinforce.py              # seeds 0-4, about 15 seconds
    python benchmarks/bench_reinforce.py --seeds 0    # quicker
    python benchmarks/bench_reinforce.py --profile    # where our agent's time goes

Measured here (2 CPU cores, TensorFlow 2.21, gymnasium 1.4, seeds 0-4): median solve at
83,560 environment steps, 5/5 solved, in 0.73 s against the NumPy agent's 0.90 s (0.80x;
per seed 0.68-1.61x: the seeds that need more steps lose). Over seeds 0-39 the defaults
solved 40/40, median 86,056 steps (quartiles 76,896 and 106,552; the slowest 292,344).

Where the time goes (``--profile``: 100,000 CartPole steps with the default agent, after a
warm-up that compiles the update). Unprofiled the 100,000 steps take 0.68 s. Of the profiled
time:

- the vector environment (8 CartPoles, gymnasium's NumPy implementation) is 55%; stepped
  alone with fixed actions it takes 0.35 s for as many steps, half of our total. Its check
  that each batch of actions is valid is 13% of the profile. (One CartPole stepped in a
  loop, as the NumPy agent does, takes 0.51 s.)
- acting (12,500 calls of the policy's NumPy forward pass and a Gumbel-max sample) is 12%;
- the updates (25 of them: returns, tape, gradients, Adam) are 12%;
- the rest is the rollout's bookkeeping (stacking observations, masks, returns).

How it got here (from 1.0-1.1 s per 100,000 steps and a 1.3-1.9x ratio): the first
profile found acting at half the time, of which the policy's arithmetic was 14% and the rest
TensorFlow's Python path for calling a function, about 57 us per call even for the
XLA-compiled concrete function against 6 us for the same forward pass in NumPy. Acting now
runs in NumPy (a hook, which is TensorFlow code, still acts in one compiled call); the
update's entropy metric is computed there too (one function fewer to trace per agent).
Steps: 8 episodes per update instead of 16 (twice the updates for the same steps), learning
rate 0.03 and gamma 0.997, chosen over seeds 0-19 among 20 configurations and confirmed on
seeds 20-39 (median 82,372); Acrobot-v1 and InvertedPendulum-v5 still learn (tests). What
remains is mostly the first trace of the update (0.1 s per agent, 0.4 s more for the first
TensorFlow function of a process) and gymnasium's own stepping.
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
    """REINFORCE with a one-hidden-layer tanh MLP, written out in NumPy; by default with our
    agent's hyperparameters (``ReinforceConfig``'s defaults), so that both run one algorithm."""

    def __init__(self, seed, hidden=None, lr=None, gamma=None, episodes_per_update=None):
        from agents import ReinforceConfig

        defaults = ReinforceConfig()
        assert len(defaults.hidden_sizes) == 1 and defaults.activation == "tanh"
        hidden = hidden or defaults.hidden_sizes[0]
        lr, gamma = lr or defaults.learning_rate, gamma or defaults.gamma
        episodes_per_update = episodes_per_update or defaults.num_envs
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
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
    numpy_times, ours_times, steps = [], [], {"numpy": [], "gradlab": []}
    for seed in args.seeds:
        numpy_s, numpy_steps = NumpyReinforce(seed).solve(seed)
        ours_s, ours_steps = solve_with_gradlab(seed)
        ratio = ours_s / numpy_s if numpy_s and ours_s else float("nan")
        fmt = lambda s: f"{s:9.2f}" if s else "  unsolved"
        print(f"{seed:>4} {fmt(numpy_s)} {numpy_steps:>12} {fmt(ours_s):>10} {ours_steps:>14} "
              f"{ratio:6.2f}")
        # An unsolved seed counts as never: its steps enter the median as infinite.
        steps["numpy"].append(numpy_steps if numpy_s else float("inf"))
        steps["gradlab"].append(ours_steps if ours_s else float("inf"))
        if numpy_s and ours_s:
            numpy_times.append(numpy_s)
            ours_times.append(ours_s)
    solved = {k: sum(v != float("inf") for v in steps[k]) for k in steps}
    print("median steps to solve: " + ", ".join(
        f"{k} {statistics.median(v):,.0f} ({solved[k]}/{len(v)} solved)"
        for k, v in steps.items()))
    if numpy_times:
        n_med, o_med = statistics.median(numpy_times), statistics.median(ours_times)
        print(f"median seconds to solve (seeds both solved): numpy {n_med:.2f}, gradlab "
              f"{o_med:.2f}; gradlab / numpy = {o_med / n_med:.2f}x")

if __name__ == "__main__":
    main()
