"""REINFORCE learning curves on a gymnasium environment, over several seeds.

    python -m experiments.reinforce --env CartPole-v1 --seeds 0 1 2 3 4 --out DIR

For each seed, trains ``agents.Reinforce`` for ``--total-steps`` environment steps and writes
into DIR (default ``results/reinforce/<env>/``):

- ``config.json``: the resolved config and library versions;
- ``metrics.csv``: per seed and update: env steps, episodes, mean return of the update's
  episodes, running mean of the last 100 episode returns, loss, gradient norm, entropy,
  baseline loss, wall seconds;
- ``summary.json``: per seed ``solved_at_env_steps`` (first env-step count at which the mean
  of the last 100 episode returns reaches the environment's reward threshold, else null),
  ``wall_seconds_to_solve``, ``final_mean_return`` (last 100 training episodes) and
  ``eval_mean_return`` (20 deterministic episodes of the final policy), and the median of each
  over seeds (an unsolved seed counts as never: the median is null when half or more are);
- ``learning_curve.png``: running mean return against env steps, mean over seeds with a
  min-max band, the reward threshold as a line;
- ``agents/seed_<k>/``: each trained agent (``Reinforce.load`` reads it back).

Results are written after every seed, and an interrupted run (Ctrl-C) saves the agent it was
training and the metrics so far before it stops.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import deque
from dataclasses import field
from pathlib import Path

from agents import Reinforce, ReinforceConfig
from experiments.cli import parse_config
from experiments.records import save_figure, write_config, write_csv, write_json
from lab.checks import check_positive_int


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    env: str = field(default="CartPole-v1", metadata={"help": "gymnasium environment id"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2, 3, 4), metadata={"help": "one run each"})
    total_steps: int = field(default=250_000, metadata={"help": "env steps per seed"})
    eval_episodes: int = field(default=20, metadata={"help": "deterministic eval episodes"})
    out: str | None = field(default=None, metadata={"help": "default results/reinforce/<env>"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    agent: ReinforceConfig = field(default=ReinforceConfig(),
                                   metadata={"cli_exclude": ("seed",)})

    def __post_init__(self):
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be one or more non-negative integers. "
                             f"Received: seeds={self.seeds!r}")
        check_positive_int("total_steps", self.total_steps)
        check_positive_int("eval_episodes", self.eval_episodes)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("results") / "reinforce" / self.env


def run_seed(config: ExperimentConfig, seed: int, rows: list, out: Path) -> dict:
    """Trains one agent; appends its metrics rows to ``rows``; returns its summary."""
    agent = Reinforce(config.env, dataclasses.replace(config.agent, seed=seed))
    threshold = agent.reward_threshold
    recent = deque(maxlen=100)
    summary = {"solved_at_env_steps": None, "wall_seconds_to_solve": None}

    def record(row):
        recent.extend(row.pop("episode_returns"))
        running = sum(recent) / len(recent)
        rows.append({"seed": seed, **row, "running_mean_return": running})
        if (threshold is not None and summary["solved_at_env_steps"] is None
                and len(recent) == 100 and running >= threshold):
            summary["solved_at_env_steps"] = row["env_steps"]
            summary["wall_seconds_to_solve"] = row["wall_seconds"]

    try:
        agent.train(config.total_steps, callback=record, progress=config.progress)
    finally:  # a crash or Ctrl-C keeps what was trained
        agent.close()
        agent.save(out / "agents" / f"seed_{seed}")
    summary["final_mean_return"] = sum(recent) / len(recent)
    summary["eval_mean_return"] = float(agent.evaluate(episodes=config.eval_episodes,
                                                       seed=10_000 + seed).mean())
    return summary


def _median(values):
    """Median with ``None`` as +infinity (never solved); ``None`` if that is the median."""
    ranked = sorted(float("inf") if v is None else v for v in values)
    m = statistics.median(ranked)
    return None if m == float("inf") else m


def summarize(config: ExperimentConfig, per_seed: dict, threshold) -> dict:
    keys = ("solved_at_env_steps", "wall_seconds_to_solve", "final_mean_return",
            "eval_mean_return")
    return {
        "env": config.env,
        "reward_threshold": threshold,
        "seeds_solved": sum(s["solved_at_env_steps"] is not None for s in per_seed.values()),
        "seeds": len(per_seed),
        "median": {k: _median([s[k] for s in per_seed.values()]) for k in keys},
        "per_seed": per_seed,
    }


def plot_learning_curve(rows, config: ExperimentConfig, threshold, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = {}
    for r in rows:
        steps, values = runs.setdefault(r["seed"], ([], []))
        steps.append(r["env_steps"])
        values.append(r["running_mean_return"])
    # Start where every seed has data, so the mean and band never extrapolate backwards.
    grid = np.linspace(max(steps[0] for steps, _ in runs.values()), config.total_steps, 200)
    curves = np.array([np.interp(grid, steps, values) for steps, values in runs.values()])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.fill_between(grid, curves.min(axis=0), curves.max(axis=0), alpha=0.25,
                    label=f"min-max over {len(curves)} seeds")
    ax.plot(grid, curves.mean(axis=0), lw=2, label="mean over seeds")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"reward threshold {threshold:g}")
    ax.set(title=f"REINFORCE on {config.env}",
           xlabel="environment steps",
           ylabel="mean return of the last 100 episodes")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, path)


def main(argv=None) -> dict:
    config = parse_config(ExperimentConfig, argv, description=__doc__.split("\n")[0])
    out = config.out_dir
    write_config(out, config)
    rows, per_seed, threshold = [], {}, None
    try:
        for seed in config.seeds:
            per_seed[str(seed)] = run_seed(config, seed, rows, out)
            write_csv(out / "metrics.csv", rows)
    finally:  # also on Ctrl-C: keep the metrics of the seeds and updates run so far
        write_csv(out / "metrics.csv", rows)
    import gymnasium as gym

    threshold = gym.spec(config.env).reward_threshold
    summary = summarize(config, per_seed, threshold)
    write_json(out / "summary.json", summary)
    plot_learning_curve(rows, config, threshold, out / "learning_curve.png")
    median = summary["median"]
    print(f"{config.env}: solved {summary['seeds_solved']}/{summary['seeds']} seeds; median "
          f"solved_at_env_steps={median['solved_at_env_steps']}, wall_seconds_to_solve="
          f"{median['wall_seconds_to_solve']}; results in {out}")
    return summary


if __name__ == "__main__":
    main()
