"""REINFORCE learning curves on a gymnasium environment, over several seeds.

    python -m experiments.reinforce --env CartPole-v1 --seeds 0 1 2 3 4 --out DIR

For each seed, trains ``agents.Reinforce`` (its defaults, or the environment's ``PRESETS``
entry on the fields left at their defaults) for ``--total-steps`` environment steps and writes
into DIR (default ``results/reinforce/<env>/``):

- ``config.json``: the resolved config and library versions;
- ``metrics.csv``: per seed and update: env steps, episodes, mean return of the update's
  episodes, running mean of the last 100 episode returns, loss, gradient norm, entropy,
  updates skipped so far as non-finite, baseline loss, wall seconds;
- ``summary.json``: per seed ``solved_at_env_steps`` (first env-step count at which the mean
  of the last 100 episode returns reaches the environment's reward threshold, else null),
  ``wall_seconds_to_solve``, ``final_mean_return`` (last 100 training episodes) and
  ``eval_mean_return`` (20 deterministic episodes of the final policy), and the median of each
  over seeds (an unsolved seed counts as never: the median is null when half or more are);
- ``learning_curve.png``: running mean return against env steps, mean over seeds with a
  min-max band, the reward threshold as a line;
- ``agents/seed_<k>/``: each trained agent (``Reinforce.load`` reads it back).

The run is written into ``DIR.partial/`` and moved over DIR only when complete, so DIR always
holds one whole run. Every ``--checkpoint-every`` updates, and on Ctrl-C once the update
under way is complete, the agent in training and the metrics so far are saved there
(``progress/``); ``--resume`` continues an interrupted or killed run from that save and ends
with the same numbers as a run that was never stopped (wall times aside). A second Ctrl-C
stops at once; the last save stands.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import deque
from dataclasses import field
from pathlib import Path

from agents import Reinforce, ReinforceConfig
from experiments.cli import run_command
from experiments.interrupts import interrupts_deferred
from experiments.records import (
    TensorBoardLog,
    band,
    runs_by_seed,
    save_figure,
    subplots,
    write_csv,
    write_json,
)
from experiments.skeleton import run_experiment
from lab.checks import check_positive_int, check_seeds

# --quick caps these, so that a smoke test writes every file in seconds.
QUICK = {"seeds": 2, "total_steps": 10_000, "eval_episodes": 2}

# Agent settings per environment where ReinforceConfig's defaults (tuned on CartPole-v1) serve
# it badly, chosen by benchmarks/bench_reinforce_presets.py (its docstring holds the sweep).
# --preset applies them to the agent fields a run leaves at their defaults.
PRESETS = {"Acrobot-v1": {"entropy_coef": 0.01, "num_envs": 16},
           "InvertedPendulum-v5": {"init_log_std": -1.5}}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    env: str = field(default="CartPole-v1", metadata={"help": "gymnasium environment id"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2, 3, 4), metadata={"help": "one run each"})
    total_steps: int = field(default=250_000, metadata={"help": "env steps per seed"})
    eval_episodes: int = field(default=20, metadata={"help": "deterministic eval episodes"})
    out: str | None = field(default=None, metadata={"help": "default results/reinforce/<env>"})
    checkpoint_every: int = field(default=5, metadata={"help": "updates between checkpoints"})
    resume: bool = field(default=False, metadata={
        "help": "continue the interrupted run in <out>.partial from its last checkpoint"})
    progress: bool = field(default=True, metadata={"help": "progress bars (on a terminal)"})
    quick: bool = field(default=False, metadata={
        "help": f"smoke test: the first {QUICK['seeds']} seeds, at most {QUICK['total_steps']:,} "
                f"steps and {QUICK['eval_episodes']} evaluation episodes each"})
    preset: bool = field(default=True, metadata={
        "help": "apply the environment's agent preset (experiments.reinforce.PRESETS) to the "
                "agent fields left at their defaults; --no-preset keeps every default"})
    agent: ReinforceConfig = field(default=ReinforceConfig(),
                                   metadata={"cli_exclude": ("seed",)})

    def __post_init__(self):
        check_seeds("seeds", self.seeds)
        check_positive_int("total_steps", self.total_steps)
        check_positive_int("eval_episodes", self.eval_episodes)
        check_positive_int("checkpoint_every", self.checkpoint_every)

    def resolved(self) -> ExperimentConfig:
        """This config with the environment's preset and the ``--quick`` caps applied (what
        actually runs and is saved in ``config.json``)."""
        config = self
        if self.preset and self.env in PRESETS:
            defaults = ReinforceConfig()
            config = dataclasses.replace(self, agent=dataclasses.replace(self.agent, **{
                name: value for name, value in PRESETS[self.env].items()
                if getattr(self.agent, name) == getattr(defaults, name)}))
        if not config.quick:
            return config
        return dataclasses.replace(
            config, seeds=config.seeds[:QUICK["seeds"]],
            total_steps=min(config.total_steps, QUICK["total_steps"]),
            eval_episodes=min(config.eval_episodes, QUICK["eval_episodes"]))

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("results") / "reinforce" / self.env


def run_seed(config: ExperimentConfig, seed: int, state: dict, folder, save, deferred,
             tensorboard: TensorBoardLog | None = None) -> dict:
    """Trains one agent (from the run's saved agent when resuming this seed), appending its
    metrics rows to ``state["rows"]``; ``save(agent)`` every ``checkpoint_every`` updates and
    where a Ctrl-C waits (``deferred``); saves the agent into ``agents/seed_<k>``; returns its
    summary."""
    current = state["current"]
    saved = folder.saved_learner("agent") if current and current["seed"] == seed else None
    if saved is not None:
        with folder.reading(saved):
            agent = Reinforce.load(saved, env=config.env)
    else:
        current = state["current"] = {"seed": seed, "recent": [], "solved_at_env_steps": None,
                                      "wall_seconds_to_solve": None, "wall_seconds": 0.0}
        agent = Reinforce(config.env, dataclasses.replace(config.agent, seed=seed))
    threshold = agent.reward_threshold
    recent = deque(current["recent"], maxlen=100)
    wall_offset = current["wall_seconds"]

    def record(row):
        recent.extend(row.pop("episode_returns"))
        row["wall_seconds"] += wall_offset
        running = sum(recent) / len(recent)
        state["rows"].append({"seed": seed, **row, "running_mean_return": running})
        if tensorboard is not None:
            tensorboard.add(state["rows"][-1])
        current.update(recent=list(recent), wall_seconds=row["wall_seconds"])
        if (threshold is not None and current["solved_at_env_steps"] is None
                and len(recent) == 100 and running >= threshold):
            current["solved_at_env_steps"] = row["env_steps"]
            current["wall_seconds_to_solve"] = row["wall_seconds"]
        # The update and its row are complete: a state that resumes exactly.
        if agent.updates % config.checkpoint_every == 0 or deferred.received:
            save(agent)
        deferred.raise_if_received()

    try:
        if agent.env_steps < config.total_steps:
            agent.train(config.total_steps - agent.env_steps, callback=record,
                        progress=config.progress)
    finally:
        agent.close()
    agent.save(folder.path / "agents" / f"seed_{seed}")
    summary = {key: current[key] for key in ("solved_at_env_steps", "wall_seconds_to_solve")}
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
    import numpy as np

    runs = [([r["env_steps"] for r in seed_rows], [r["running_mean_return"] for r in seed_rows])
            for seed_rows in runs_by_seed(rows).values()]
    # Start where every seed has data, so the mean and band never extrapolate backwards.
    grid = np.linspace(max(steps[0] for steps, _ in runs), config.total_steps, 200)
    fig, ax = subplots(figsize=(7, 4.2))
    band(ax, grid, [np.interp(grid, steps, values) for steps, values in runs], "C0", lw=2,
         label=f"mean over seeds, band: min-max over {len(runs)}")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"reward threshold {threshold:g}")
    ax.set(title=f"REINFORCE on {config.env}",
           xlabel="environment steps",
           ylabel="mean return of the last 100 episodes")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, path)


def start(config: ExperimentConfig):
    """A bad environment fails here, before anything is written."""
    Reinforce(config.env, dataclasses.replace(config.agent, seed=config.seeds[0])).close()
    return None, {}


def run(config: ExperimentConfig, folder, started=None) -> dict:
    import gymnasium as gym

    # What the run has done: metrics rows, finished seeds' summaries, and the seed in
    # training (its last 100 returns, when it solved, its wall time so far), saved with that
    # seed's agent in one store, so the two always agree.
    state = folder.progress({"rows": [], "per_seed": {}, "current": None})

    def save(agent=None):
        folder.save_progress(state, {"agent": agent.save} if agent is not None else {})
        write_csv(folder.path / "metrics.csv", state["rows"])

    with folder.tensorboard(("seed",), "env_steps", state["rows"]) as tensorboard, \
            interrupts_deferred() as deferred:
        for seed in config.seeds:
            if str(seed) in state["per_seed"]:
                continue  # finished before the interruption
            state["per_seed"][str(seed)] = run_seed(config, seed, state, folder, save,
                                                    deferred, tensorboard)
            state["current"] = None
            save()
            deferred.raise_if_received()
    threshold = gym.spec(config.env).reward_threshold
    summary = summarize(config, state["per_seed"], threshold)
    write_json(folder.path / "summary.json", summary)
    plot_learning_curve(state["rows"], config, threshold, folder.path / "learning_curve.png")
    return summary


def report(config: ExperimentConfig, summary: dict, out) -> None:
    median = summary["median"]
    print(f"{config.env}: solved {summary['seeds_solved']}/{summary['seeds']} seeds; median "
          f"solved_at_env_steps={median['solved_at_env_steps']}, wall_seconds_to_solve="
          f"{median['wall_seconds_to_solve']}; results in {out}")


def main(argv=None) -> dict:
    import gymnasium as gym

    return run_experiment(ExperimentConfig, argv, name="reinforce", start=start, run=run,
                          start_errors=(gym.error.Error,), resumable=True, report=report)


if __name__ == "__main__":
    run_command(main)
