"""Attacks on a trained policy's observations, and policies trained to withstand them.

Per seed, a standard ``agents.Reinforce`` agent and an adversarially trained one: the same
agent acting on observations attacked through its ``observation_hook`` by ``--train-method``,
eps ramped up over ``--ramp-fraction`` of training (Pattanaik et al. 2018), each environment
facing one objective of the evaluation (``--train-objectives all``). Each agent then plays
greedy episodes with fixed seeds, clean and under every attack at every eps (in units of each
feature's standard deviation under the standard agents' clean play, ``obs_std``): ``random``
(the same budget as noise: the control), ``fgsm`` and ``pgd`` (away from the greedy action,
or shifting a Box action's mean) and ``pgd_toward_<k>``. ``worst`` is, per seed and eps, the
lowest return over every attack but ``random`` (a model is as robust as its weakest
evaluation says). Only what the agent sees is perturbed.

Writes ``config.json``, ``training.csv`` (per kind, seed and update), ``metrics.csv`` (per
kind, seed, attack and eps), ``summary.json`` (per-seed mean returns, ``worst``, the README's
targets), ``return_vs_eps.png``, ``episode.png`` (the first seed's standard agent, clean and
under its worst attack) and ``agents/<kind>/seed_<k>/`` into ``--out`` (default
``results/policy_attacks/<env>/``; run folder and ``--resume``: ``experiments.run_folder``).

References:
  Huang, Papernot, Goodfellow, Duan, Abbeel. Adversarial attacks on neural network policies.
  2017. arXiv:1702.02284.
  Pattanaik, Tang, Liu, Bommannan, Chowdhary. Robust deep reinforcement learning with
  adversarial attacks. AAMAS 2018. arXiv:1712.03632.
  Zhang et al. Robust deep reinforcement learning against adversarial perturbations on state
  observations. NeurIPS 2020. arXiv:2003.08938.
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from dataclasses import field
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np

from agents import Reinforce, ReinforceConfig
from attacks.observation import (
    AttackedObservations,
    AttackedVectorObservations,
    ObjectivePerEnvironment,
    ObservationAttack,
    ObservationRecorder,
    check_attackable,
)
from experiments import records
from experiments.cli import check_values, run_command
from experiments.interrupts import interrupts_deferred
from experiments.skeleton import run_experiment
from lab.checks import check_in_range, check_one_of, check_positive, check_positive_int, check_seeds

KINDS = ("standard", "adversarial")
# The feature each environment's episode plot follows.
PLOT_FEATURE = {"CartPole-v1": (2, "pole angle (rad)"),
                "InvertedPendulum-v5": (1, "pole angle (rad)")}


# The agent this experiment was designed with (training eps, ramp and budget were chosen for
# it): REINFORCE's defaults before they were tuned to solve CartPole in fewer steps (the
# README says how the tuned agent fares).
AGENT = ReinforceConfig(num_envs=16, learning_rate=0.02, gamma=0.99)

# --quick caps these, so that a smoke test writes every file in well under a minute.
QUICK = {"total_steps": 10_000, "eps_values": (0.0, 0.5), "eval_episodes": 1}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    env: str = field(default="CartPole-v1", metadata={"help": "gymnasium environment id"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2, 3, 4), metadata={"help": "one run each"})
    total_steps: int = field(default=250_000, metadata={"help": "env steps per agent"})
    eps_values: tuple[float, ...] = field(default=(0.0, 0.1, 0.25, 0.5, 1.0), metadata={
        "help": "evaluation budgets, in observation standard deviations"})
    train_method: str = field(default="pgd", metadata={"help": "attack during training"})
    train_objectives: str = field(default="all", metadata={
        "help": "away: the training attack leaves the greedy action; all: each environment "
                "gets one objective of the evaluation (away, or toward one action)"})
    train_eps: float = field(default=0.5, metadata={"help": "training budget, in std units"})
    ramp_fraction: float = field(default=0.4, metadata={
        "help": "fraction of training over which the training eps grows from 0"})
    pgd_steps: int = field(default=10, metadata={"help": "PGD steps of the evaluation"})
    eval_episodes: int = field(default=10, metadata={"help": "episodes per seed, attack, eps"})
    out: str | None = field(default=None, metadata={
        "help": "default results/policy_attacks/<env>"})
    resume: bool = field(default=False, metadata={
        "help": "continue the interrupted run in <out>.partial"})
    progress: bool = field(default=True, metadata={"help": "progress bars (on a terminal)"})
    quick: bool = field(default=False, metadata={
        "help": f"smoke test: the first seed, at most {QUICK['total_steps']:,} steps per agent, "
                f"eps {QUICK['eps_values']}, {QUICK['eval_episodes']} episode per attack"})
    agent: ReinforceConfig = field(default=AGENT,
                                   metadata={"cli_exclude": ("seed",)})

    def __post_init__(self):
        check_seeds("seeds", self.seeds)
        check_positive_int("total_steps", self.total_steps)
        check_values("eps_values", self.eps_values, partial(check_positive, allow_zero=True),
                     increasing=True)
        if self.eps_values[0] != 0.0:
            raise ValueError(f"eps_values must start at 0 (the clean return). "
                             f"Received: eps_values={self.eps_values!r}")
        check_one_of("train_method", self.train_method, ("random", "fgsm", "pgd"))
        check_one_of("train_objectives", self.train_objectives, ("away", "all"))
        check_positive("train_eps", self.train_eps)
        check_in_range("ramp_fraction", self.ramp_fraction, 0.0, 1.0)
        check_positive_int("pgd_steps", self.pgd_steps)
        check_positive_int("eval_episodes", self.eval_episodes)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("results") / "policy_attacks" / self.env

    def resolved(self) -> ExperimentConfig:
        """This config with the ``--quick`` caps applied (what actually runs and is saved)."""
        if not self.quick:
            return self
        return dataclasses.replace(
            self, seeds=self.seeds[:1], total_steps=min(self.total_steps, QUICK["total_steps"]),
            eps_values=QUICK["eps_values"],
            eval_episodes=min(self.eval_episodes, QUICK["eval_episodes"]))


def attack_names(action_space: gym.Space) -> list[str]:
    if isinstance(action_space, gym.spaces.Discrete):
        return ["random", "fgsm", "pgd"] + [f"pgd_toward_{k}" for k in range(action_space.n)]
    return ["random", "fgsm", "pgd"]


def make_attack(name: str, eps: float, scale, action_space, config: ExperimentConfig,
                seed: int = 0, method: str | None = None) -> ObservationAttack:
    """The attack called ``name`` (see ``attack_names``) at budget ``eps`` (std units);
    ``method`` replaces its method (a training attack of another kind, same objective)."""
    discrete = isinstance(action_space, gym.spaces.Discrete)
    kwargs = ({"objective": "away"} if discrete else
              {"objective": "mean_shift", "action_size": int(np.prod(action_space.shape))})
    own_method = name
    if name.startswith("pgd_toward_"):
        own_method = "pgd"
        kwargs = {"objective": "toward", "target": int(name.rsplit("_", 1)[1])}
    return ObservationAttack(method or own_method, eps, eps_scale=scale,
                             steps=config.pgd_steps, seed=seed, **kwargs)


def observation_std(agents, config: ExperimentConfig) -> list[float]:
    """Per-feature standard deviation of the observations in the standard agents' clean
    greedy episodes (pooled over seeds): the unit of eps."""
    recorders = []

    def record(envs):
        recorders.append(ObservationRecorder(envs))
        return recorders[-1]

    for seed, agent in agents.items():
        agent.evaluate_parallel(config.eval_episodes, seed=20_000 + 100 * seed, wrap=record)
    std = np.concatenate([np.concatenate(r.seen) for r in recorders]).std(axis=0)
    return [float(max(s, 1e-6)) for s in std]


def training_hook(config: ExperimentConfig, scale, action_space, seed: int):
    """The attack adversarial training acts through: ``--train-method`` with the away (or
    mean-shift) objective, or, with ``--train-objectives all`` and Discrete actions, every
    objective of the evaluation, one per environment."""
    names = [config.train_method]
    if config.train_objectives == "all" and isinstance(action_space, gym.spaces.Discrete):
        names += [f"pgd_toward_{k}" for k in range(action_space.n)]
    attacks = [make_attack(name, 0.0, scale, action_space, config, seed,
                           method=config.train_method) for name in names]
    return attacks[0] if len(attacks) == 1 else ObjectivePerEnvironment(attacks)


def train_agent(config: ExperimentConfig, kind: str, seed: int, scale, action_space,
                rows: list, tensorboard=None) -> Reinforce:
    """Trains one agent of ``kind``; appends its training rows (and writes every update's
    metrics to ``tensorboard``, a ``TensorBoardLog``, if given)."""
    hook = training_hook(config, scale, action_space, seed) if kind == "adversarial" else None
    agent = Reinforce(config.env, dataclasses.replace(config.agent, seed=seed),
                      observation_hook=hook)
    recent = deque(maxlen=100)
    ramp_steps = config.ramp_fraction * config.total_steps

    def record(row):
        recent.extend(row.pop("episode_returns"))
        eps = 0.0 if hook is None else float(hook.eps.numpy())
        rows.append({"kind": kind, "seed": seed, "env_steps": row["env_steps"],
                     "mean_return": row["mean_return"],
                     "running_mean_return": sum(recent) / len(recent), "train_eps": eps})
        if tensorboard is not None:
            tensorboard.add({**rows[-1], **row})
        if hook is not None:  # the next batch is collected at the ramped eps
            hook.eps.assign(config.train_eps * min(1.0, row["env_steps"] / max(ramp_steps, 1)))

    agent.train(config.total_steps, callback=record, progress=config.progress)
    agent.close()
    return agent


def evaluate_agent(agent: Reinforce, config: ExperimentConfig, scale, seed: int) -> dict:
    """``{attack: {eps: [episode returns]}}``, the clean returns under every attack at eps 0."""
    eval_seed = 10_000 + 100 * seed
    clean = agent.evaluate_parallel(config.eval_episodes, seed=eval_seed).tolist()
    results = {}
    for name in attack_names(agent.action_space):
        results[name] = {"0.0": clean}
        # One attack per name, its budget assigned per eps: compiled once, not once per eps.
        attack = make_attack(name, config.eps_values[1], scale, agent.action_space, config,
                             seed)
        for eps in config.eps_values[1:]:
            attack.eps.assign(eps)
            attack.generator.reset_from_seed(seed)  # each eps starts the same random stream
            returns = agent.evaluate_parallel(
                config.eval_episodes, seed=eval_seed,
                wrap=lambda envs, attack=attack: AttackedVectorObservations(
                    envs, agent.policy.model, attack))
            results[name][str(float(eps))] = returns.tolist()
    return results


def summarize(config: ExperimentConfig, evaluations: dict, training: dict, max_return: float,
              obs_std) -> dict:
    """Per-seed mean returns per kind, attack and eps; the worst case; the targets."""
    seeds = [str(s) for s in config.seeds]
    eps_keys = [str(float(e)) for e in config.eps_values]
    returns, worst = {}, {}
    for kind in KINDS:
        per_attack = {}
        for name in evaluations[kind][seeds[0]]:
            per_attack[name] = {e: [float(np.mean(evaluations[kind][s][name][e])) for s in seeds]
                                for e in eps_keys}
        returns[kind] = per_attack
        adversarial = [n for n in per_attack if n != "random"]
        worst[kind] = {e: [min(per_attack[n][e][i] for n in adversarial)
                           for i in range(len(seeds))] for e in eps_keys}
    mean = lambda values: float(np.mean(values))
    # The first eps where same-budget noise costs the standard agents under 5% of the maximum
    # return while the worst attack drives them below half of it.
    target_eps = next((e for e in eps_keys[1:]
                       if mean(returns["standard"]["random"][e]) >= 0.95 * max_return
                       and mean(worst["standard"][e]) < 0.5 * max_return), None)
    targets = {"max_return": max_return, "eps": None if target_eps is None else float(target_eps)}
    if target_eps is not None:
        robust = worst["adversarial"][target_eps]
        targets.update(
            standard_random_mean=mean(returns["standard"]["random"][target_eps]),
            standard_worst_mean=mean(worst["standard"][target_eps]),
            adversarial_worst_mean=mean(robust),
            adversarial_seeds_at_80_percent=sum(r >= 0.8 * max_return for r in robust),
            adversarial_robust=(mean(robust) >= 0.8 * max_return
                                and sum(r >= 0.8 * max_return for r in robust) >= 4))
    clean = worst["adversarial"]["0.0"]
    targets["adversarial_clean_mean"] = mean(clean)
    means = {kind: {name: {e: mean(v) for e, v in per_eps.items()}
                    for name, per_eps in {**returns[kind], "worst": worst[kind]}.items()}
             for kind in KINDS}
    return {"env": config.env, "eps_unit": "observation standard deviations", "obs_std": obs_std,
            "seeds": [int(s) for s in seeds], "eval_episodes": config.eval_episodes,
            "mean": means, "returns": returns, "worst": worst, "training": training,
            "targets": targets}


def plot_return_vs_eps(summary: dict, config: ExperimentConfig, path):
    eps = [float(e) for e in config.eps_values]
    fig, axes = records.subplots(1, 2, figsize=(12, 4.3), sharey=True, layout="constrained")
    for ax, kind in zip(axes, KINDS):
        curves = {**summary["returns"][kind], "worst": summary["worst"][kind]}
        for i, (name, values) in enumerate(curves.items()):
            style = {"color": "k", "lw": 2.2} if name == "worst" else {"color": f"C{i}"}
            if name == "random":
                style["ls"] = "--"
            records.band(ax, eps, np.transpose([values[str(e)] for e in eps]), label=name,
                         alpha=0.12, marker="o", ms=3, **style)
        ax.axhline(summary["targets"]["max_return"], color="gray", lw=0.8, ls=":")
        ax.set(title=f"{kind} agents", xlabel="L-infinity eps (observation std units)",
               ylabel="return (mean over seeds, band: min-max)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"REINFORCE on {config.env} under observation attacks "
                 f"({len(config.seeds)} seeds, {config.eval_episodes} greedy episodes each)",
                 fontsize=10)
    records.save_figure(fig, path)


def play_episode(agent: Reinforce, attack: ObservationAttack | None, seed: int):
    """One greedy episode: true observations, observations seen, actions."""
    env = agent.env_factory()
    if attack is not None:
        env = AttackedObservations(env, agent.policy.model, attack)
    true, seen, actions = [], [], []
    try:
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            true.append(np.asarray(env.clean_observation if attack else obs).reshape(-1))
            seen.append(np.asarray(obs).reshape(-1))
            action = agent.act(np.asarray(obs)[None], deterministic=True)[0]
            actions.append(np.asarray(action, np.float64).reshape(-1)[0])
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    finally:
        env.close()
    return np.array(true), np.array(seen), np.array(actions)


def plot_episode(agent: Reinforce, summary: dict, config: ExperimentConfig, path):
    """The first seed's standard agent, clean and under its worst attack at the target eps
    (else the largest eps)."""
    feature, label = PLOT_FEATURE.get(config.env, (0, "observation feature 0"))
    eps = summary["targets"]["eps"] or float(config.eps_values[-1])
    seed = config.seeds[0]
    names = [n for n in summary["returns"]["standard"] if n != "random"]
    worst = min(names, key=lambda n: summary["returns"]["standard"][n][str(float(eps))][0])
    scale = summary["obs_std"]
    episodes = {"clean": play_episode(agent, None, 10_000 + 100 * seed),
                f"{worst}, eps {eps:g} std": play_episode(
                    agent, make_attack(worst, eps, scale, agent.action_space, config, seed),
                    10_000 + 100 * seed)}
    fig, (ax_obs, ax_act) = records.subplots(2, 1, figsize=(9, 5.5), sharex=True,
                                             layout="constrained")
    for i, (name, (true, seen, actions)) in enumerate(episodes.items()):
        ax_obs.plot(true[:, feature], color=f"C{i}", label=f"{name}: true")
        if name != "clean":
            ax_obs.plot(seen[:, feature], color=f"C{i}", lw=0.6, alpha=0.6,
                        label=f"{name}: seen by the agent")
        ax_act.step(np.arange(len(actions)), actions + 0.04 * i, where="post", color=f"C{i}",
                    lw=0.8, label=f"{name} ({len(actions)} steps)")
    ax_obs.set(ylabel=label, title=f"{config.env}, seed {seed} standard agent: one greedy episode")
    ax_act.set(xlabel="step", ylabel="action")
    for ax in (ax_obs, ax_act):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    records.save_figure(fig, path)


def start(config: ExperimentConfig):
    """A bad environment, or one whose observations cannot be attacked, fails here, before
    anything is written; returns a probe agent (its spaces and episode length)."""
    probe = Reinforce(config.env, dataclasses.replace(config.agent, seed=config.seeds[0]))
    probe.close()
    check_attackable(probe.observation_space, config.env)
    return probe, {}


def run(config: ExperimentConfig, folder, probe: Reinforce) -> dict:
    summary, agents = _train_and_evaluate(config, folder, probe)
    plot_return_vs_eps(summary, config, folder.path / "return_vs_eps.png")
    plot_episode(agents["standard"][config.seeds[0]], summary, config,
                 folder.path / "episode.png")
    return summary


def main(argv=None) -> dict:
    return run_experiment(ExperimentConfig, argv, name="policy_attacks", start=start, run=run,
                          start_errors=(gym.error.Error,), resumable=True, report=report)


def _train_and_evaluate(config: ExperimentConfig, run, probe: Reinforce):
    """Trains and evaluates every agent not done yet (the run's progress says which), writes
    the metrics and the summary; returns the summary and the agents.

    The trained agents are outputs (``agents/``) and what a resumed run loads; the progress
    records each one after it is saved, with the training rows and the evaluations so far."""
    max_return = float(probe.max_steps)  # one reward per step up to the time limit
    state = run.progress({"training_rows": [], "tensorboard_rows": [], "training": {},
                          "evaluations": {k: {} for k in KINDS}, "obs_std": None})
    agents = {kind: {} for kind in KINDS}

    def agent_path(kind, seed):
        return run.path / "agents" / kind / f"seed_{seed}"

    def save_progress(agent=None, path=None):
        with interrupts_deferred():  # the agent and the record of it, or neither
            if agent is not None:
                agent.save(path)
            run.save_progress(state)
            records.write_csv(run.path / "training.csv", state["training_rows"])

    with run.tensorboard(("kind", "seed"), "env_steps",
                         state["tensorboard_rows"]) as tensorboard:
        for kind in KINDS:
            if kind == "adversarial" and state["obs_std"] is None:
                state["obs_std"] = observation_std(agents["standard"], config)
                save_progress()
            for seed in config.seeds:
                key = f"{kind}/{seed}"
                if key in state["training"]:
                    with run.reading(agent_path(kind, seed)):
                        agents[kind][seed] = Reinforce.load(agent_path(kind, seed),
                                                            env=config.env)
                    continue
                rows = []
                agent = train_agent(config, kind, seed, state["obs_std"], probe.action_space,
                                    rows, tensorboard)
                agents[kind][seed] = agent
                state["training_rows"] += rows
                state["tensorboard_rows"] = list(tensorboard.rows)
                state["training"][key] = {"final_mean_return": rows[-1]["running_mean_return"],
                                          "env_steps": agent.env_steps}
                save_progress(agent, agent_path(kind, seed))
    for kind in KINDS:
        for seed in config.seeds:
            if str(seed) in state["evaluations"][kind]:
                continue
            state["evaluations"][kind][str(seed)] = evaluate_agent(
                agents[kind][seed], config, state["obs_std"], seed)
            save_progress()
    summary = summarize(config, state["evaluations"], state["training"], max_return,
                        state["obs_std"])
    rows = [{"kind": kind, "seed": int(seed), "attack": name, "eps": float(eps),
             "mean_return": float(np.mean(r)), "min_return": float(np.min(r)),
             "max_return": float(np.max(r)), "episodes": len(r)}
            for kind in KINDS for seed, per_attack in state["evaluations"][kind].items()
            for name, per_eps in per_attack.items() for eps, r in per_eps.items()]
    return records.write_results(run.path, rows, summary), agents


def report(config: ExperimentConfig, summary: dict, out) -> None:
    targets = summary["targets"]
    for kind in KINDS:
        line = "  ".join(f"eps {float(e):g}: {np.mean(v):.0f}"
                         for e, v in summary["worst"][kind].items())
        print(f"{kind:11s} worst-case mean return  {line}")
    print(f"targets: {json.dumps(targets)}; results in {out}")


if __name__ == "__main__":
    run_command(main)
