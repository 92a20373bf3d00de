"""Attacks on a trained policy's observations, and policies trained to withstand them.

Per seed, three ``agents.Reinforce`` agents (``--kinds``): ``standard``; ``adversarial``,
the same agent acting on observations attacked through its ``observation_hook`` by
``--train-method`` (Pattanaik et al. 2018), each environment facing one objective of the
evaluation (``--train-objectives all``); and ``regularized``, trained on clean observations
with the state-adversarial regularizer (``agents.StateAdversarialRegularizer``, SA-PPO's
penalty on REINFORCE, weight ``--kappa``); on request, ``both`` (adversarial training with
the regularizer) and ``atla``: adversarial training, then ``--atla-rounds`` rounds of ATLA
(Zhang et al. 2021), each training a learned adversary against the agent and the agent
against it (``train_atla``). The robust kinds ramp their eps up over ``--ramp-fraction`` of
training.
Each agent then plays greedy episodes with fixed seeds, clean and under every attack at
every eps (in units of each feature's standard deviation under the standard agents' clean
play, ``obs_std``, or of ``--obs-std`` when given): ``random`` (the same budget as noise:
the control), ``fgsm`` and ``pgd`` (away from the greedy action, or shifting a Box action's
mean), ``mad`` (PGD maximizing the KL divergence of the action distribution, Zhang et al.
2020), ``pgd_toward_<k>``, and ``learned``: a REINFORCE adversary of its own per agent
(``attacks.learned_adversary``: for Discrete actions a ``DirectorEnv``, in which it names
the action the agent should take and a search over the corners of the ball makes it do so
where it can, PA-AD's director; for Box actions an ``AdversaryEnv``, in which it perturbs
each feature, SA-RL's optimal attack), cloned from the untargeted gradient attack and then
trained for ``--adversary-steps`` to minimize the victim's return at the largest eps
(smaller eps shrink the ball it acts in); at each eps, of the clone and the trained
adversary, the one stronger on episodes of its own attacks. ``worst`` is, per seed and eps,
the lowest return over every attack but ``random`` (a model is as robust as its weakest
evaluation says). Only what the agent sees is perturbed.

Over seeds, each mean return has a bootstrap 95% interval (``experiments.records``); the
``comparisons`` in ``summary.json`` call one kind more robust than another at an eps only
where their worst-case intervals do not overlap. TensorFlow's op determinism is on: a rerun
on one machine is bit-identical, but float32 kernels differ across CPUs, and RL amplifies
the difference, which is why the seeds are many.

Writes ``config.json``, ``training.csv`` (per kind, seed and update), ``metrics.csv`` (per
kind, seed, attack and eps), ``summary.json`` (per-seed mean returns, ``worst``, intervals,
comparisons, the README's targets, which version of each learned adversary attacked at each
eps under ``adversaries``, each ``atla`` agent's rounds under ``training``: the agent's
return against each round's adversary before it trained against it), ``return_vs_eps.png``,
``episode.png`` (the first seed's standard agent, clean and under its worst gradient attack),
``agents/<kind>/seed_<k>/`` and ``adversaries/<kind>/seed_<k>/{clone,trained}/`` into
``--out`` (default ``results/policy_attacks/<env>/``; run folder and ``--resume``:
``experiments.run_folder``).

References:
  Huang, Papernot, Goodfellow, Duan, Abbeel. Adversarial attacks on neural network policies.
  2017. arXiv:1702.02284.
  Pattanaik, Tang, Liu, Bommannan, Chowdhary. Robust deep reinforcement learning with
  adversarial attacks. AAMAS 2018. arXiv:1712.03632.
  Zhang et al. Robust deep reinforcement learning against adversarial perturbations on state
  observations. NeurIPS 2020. arXiv:2003.08938.
  Zhang, Chen, Boning, Hsieh. Robust reinforcement learning on state observations with learned
  optimal adversary. ICLR 2021. arXiv:2101.08452.
  Sun, Zheng, Liang, Huang. Who is the strongest enemy? Towards optimal and efficient evasion
  attacks in deep RL. ICLR 2022. arXiv:2106.05087.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import tempfile
from collections import deque
from dataclasses import field
from functools import cache, partial
from pathlib import Path

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from agents import Reinforce, ReinforceConfig, StateAdversarialRegularizer
from agents.policies import HostForward, observation_size
from attacks.learned_adversary import (
    AdversaryEnv,
    DirectorEnv,
    LearnedAdversaryHook,
    victim_returns,
)
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
from lab.checks import (
    check_in_range,
    check_nonnegative_int,
    check_one_of,
    check_positive,
    check_positive_int,
    check_seeds,
)

KINDS = ("standard", "adversarial", "regularized", "both", "atla")
# The feature each environment's episode plot follows.
PLOT_FEATURE = {"CartPole-v1": (2, "pole angle (rad)"),
                "InvertedPendulum-v5": (1, "pole angle (rad)")}
# Issue 20's targets for the robust kinds' worst case: (eps, statistic, fraction of the
# maximum return, share of seeds). "median": the median over seeds reaches it; "seeds": at
# least that share of seeds does.
TARGETS = {
    "CartPole-v1": (("0.5", "median", 0.9, None), ("0.5", "seeds", 0.8, 0.9)),
    "InvertedPendulum-v5": (("0.3", "seeds", 0.95, 1.0), ("0.5", "seeds", 0.8, 1.0)),
}
# Fewer seeds than this give no interval worth the name: no comparison is then significant.
MIN_SEEDS_FOR_INTERVALS = 5
# Episodes of the gradient attack the learned adversary is cloned from, before it trains.
DEMONSTRATION_EPISODES = 5
# Episodes of its own (not the evaluation's) on which the learned adversary's clone and its
# trained self are compared at each eps; the stronger attacks at that eps.
SELECTION_EPISODES = 10

# The agent this experiment was designed with (training eps, ramp and budget were chosen for
# it): REINFORCE's defaults before they were tuned to solve CartPole in fewer steps (the
# README says how the tuned agent fares).
AGENT = ReinforceConfig(num_envs=16, learning_rate=0.02, gamma=0.99)

# --quick caps these, so that a smoke test writes every file in about a minute.
QUICK = {"total_steps": 10_000, "eps_values": (0.0, 0.5), "eval_episodes": 1,
         "adversary_steps": 5_000, "atla_steps": 5_000}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    env: str = field(default="CartPole-v1", metadata={"help": "gymnasium environment id"})
    seeds: tuple[int, ...] = field(default=tuple(range(10)), metadata={"help": "one run each"})
    kinds: tuple[str, ...] = field(default=KINDS[:3], metadata={
        "help": f"agents to train, among {KINDS}, standard first (it measures obs_std); "
                f"both: adversarial training plus the regularizer; atla: adversarial training, "
                f"then rounds against a learned adversary"})
    total_steps: int = field(default=250_000, metadata={"help": "env steps per agent"})
    eps_values: tuple[float, ...] = field(default=(0.0, 0.1, 0.3, 0.5), metadata={
        "help": "evaluation budgets, in observation standard deviations"})
    obs_std: tuple[float, ...] | None = field(default=None, metadata={
        "help": "the unit of eps, one positive number per observation feature (another run's "
                "summary obs_std, to attack with the same budgets); default: measured from "
                "the standard agents' clean play"})
    train_method: str = field(default="pgd", metadata={"help": "attack during training"})
    train_objectives: str = field(default="all", metadata={
        "help": "away: the training attack leaves the greedy action; all: each environment "
                "gets one objective of the evaluation (away, or toward one action)"})
    train_eps: float = field(default=0.5, metadata={
        "help": "training budget of both robust kinds, in std units"})
    ramp_fraction: float = field(default=0.4, metadata={
        "help": "fraction of training over which the training eps grows from 0"})
    kappa: float = field(default=3.0, metadata={
        "help": "weight of the state-adversarial regularizer (regularized agents)"})
    pgd_steps: int = field(default=10, metadata={"help": "PGD steps of the evaluation"})
    adversary_steps: int = field(default=200_000, metadata={
        "help": "env steps of each learned adversary's training (0: no learned adversary)"})
    adversary_envs: int = field(default=4, metadata={
        "help": "episodes per update of each learned adversary"})
    adversary_learning_rate: float = field(default=0.01, metadata={
        "help": "the learned adversary's Adam learning rate"})
    atla_rounds: int = field(default=2, metadata={
        "help": "atla agents: rounds of (train a learned adversary, train against it)"})
    atla_steps: int = field(default=300_000, metadata={
        "help": "atla agents: env steps of training against each round's adversary"})
    atla_learning_rate: float = field(default=0.005, metadata={
        "help": "atla agents: Adam learning rate of the rounds"})
    eval_episodes: int = field(default=10, metadata={"help": "episodes per seed, attack, eps"})
    out: str | None = field(default=None, metadata={
        "help": "default results/policy_attacks/<env>"})
    resume: bool = field(default=False, metadata={
        "help": "continue the interrupted run in <out>.partial"})
    progress: bool = field(default=True, metadata={"help": "progress bars (on a terminal)"})
    quick: bool = field(default=False, metadata={
        "help": f"smoke test: the first seed, at most {QUICK['total_steps']:,} steps per agent "
                f"and {QUICK['adversary_steps']:,} per adversary, eps {QUICK['eps_values']}, "
                f"{QUICK['eval_episodes']} episode per attack"})
    agent: ReinforceConfig = field(default=AGENT,
                                   metadata={"cli_exclude": ("seed",)})

    def __post_init__(self):
        check_seeds("seeds", self.seeds)
        check_values("kinds", self.kinds, partial(check_one_of, choices=KINDS))
        if self.kinds[0] != "standard":
            raise ValueError(f"kinds must start with standard (its clean play is the unit of "
                             f"eps). Received: kinds={self.kinds!r}")
        check_positive_int("total_steps", self.total_steps)
        check_values("eps_values", self.eps_values, partial(check_positive, allow_zero=True),
                     increasing=True)
        if self.eps_values[0] != 0.0:
            raise ValueError(f"eps_values must start at 0 (the clean return). "
                             f"Received: eps_values={self.eps_values!r}")
        for i, std in enumerate(self.obs_std or ()):
            check_positive(f"obs_std[{i}]", std)
        check_one_of("train_method", self.train_method, ("random", "fgsm", "pgd"))
        check_one_of("train_objectives", self.train_objectives, ("away", "all"))
        check_positive("train_eps", self.train_eps)
        check_in_range("ramp_fraction", self.ramp_fraction, 0.0, 1.0)
        check_positive("kappa", self.kappa)
        check_positive_int("pgd_steps", self.pgd_steps)
        check_nonnegative_int("adversary_steps", self.adversary_steps)
        check_positive_int("adversary_envs", self.adversary_envs)
        check_positive("adversary_learning_rate", self.adversary_learning_rate)
        check_positive_int("atla_rounds", self.atla_rounds)
        check_positive_int("atla_steps", self.atla_steps)
        check_positive("atla_learning_rate", self.atla_learning_rate)
        if "atla" in self.kinds and not self.adversary_steps:
            raise ValueError(f"atla agents train against a learned adversary: adversary_steps "
                             f"must be >= 1 with kinds {self.kinds!r}. Received: "
                             f"adversary_steps={self.adversary_steps}")
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
            adversary_steps=min(self.adversary_steps, QUICK["adversary_steps"]),
            atla_steps=min(self.atla_steps, QUICK["atla_steps"]),
            eval_episodes=min(self.eval_episodes, QUICK["eval_episodes"]))


def attack_names(action_space: gym.Space, learned: bool = True) -> list[str]:
    """Every attack of the evaluation; the gradient attacks are all but ``random`` and
    ``learned``."""
    names = ["random", "fgsm", "pgd", "mad"]
    if isinstance(action_space, gym.spaces.Discrete):
        names += [f"pgd_toward_{k}" for k in range(action_space.n)]
    return names + ["learned"] * learned


def make_attack(name: str, eps: float, scale, action_space, config: ExperimentConfig,
                seed: int = 0, method: str | None = None) -> ObservationAttack:
    """The gradient (or random) attack called ``name`` (see ``attack_names``) at budget
    ``eps`` (std units); ``method`` replaces its method (a training attack of another kind,
    same objective)."""
    discrete = isinstance(action_space, gym.spaces.Discrete)
    action_size = None if discrete else int(np.prod(action_space.shape))
    kwargs = ({"objective": "away"} if discrete else
              {"objective": "mean_shift", "action_size": action_size})
    own_method = name
    if name.startswith("pgd_toward_"):
        own_method = "pgd"
        kwargs = {"objective": "toward", "target": int(name.rsplit("_", 1)[1])}
    elif name == "mad":
        own_method = "pgd"
        kwargs = {"objective": "kl", "action_size": action_size}
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
    hook = (training_hook(config, scale, action_space, seed)
            if kind in ("adversarial", "both", "atla") else None)
    regularizer = (StateAdversarialRegularizer(config.kappa, 0.0, eps_scale=scale)
                   if kind in ("regularized", "both") else None)
    ramped = [r for r in (hook, regularizer) if r is not None]  # their eps grow in training
    agent = Reinforce(config.env, dataclasses.replace(config.agent, seed=seed),
                      observation_hook=hook, state_regularizer=regularizer)
    ramp_steps = config.ramp_fraction * config.total_steps

    def ramp(row):  # the next update runs at the ramped eps
        for robust in ramped:
            robust.eps.assign(config.train_eps * min(1.0, row["env_steps"] / max(ramp_steps, 1)))

    agent.train(config.total_steps, callback=recorder(kind, seed, ramped, rows, tensorboard, ramp),
                progress=config.progress)
    agent.close()
    return agent


def recorder(kind: str, seed: int, ramped: list, rows: list, tensorboard=None,
             then=lambda row: None):
    """A training callback: appends each update's row to ``rows`` (and ``tensorboard``), with
    the running mean of the last 100 episodes and the training eps (the first of ``ramped``,
    the hooks and regularizers whose eps grows, or 0), then calls ``then(row)``."""
    recent = deque(maxlen=100)

    def record(row):
        recent.extend(row.pop("episode_returns"))
        eps = float(ramped[0].eps.numpy()) if ramped else 0.0
        rows.append({"kind": kind, "seed": seed, "env_steps": row["env_steps"],
                     "mean_return": row["mean_return"],
                     "running_mean_return": sum(recent) / len(recent), "train_eps": eps})
        if tensorboard is not None:
            tensorboard.add({**rows[-1], **row})
        then(row)

    return record


def train_atla(config: ExperimentConfig, seed: int, evaluation: Evaluation, path: Path,
               rows: list, tensorboard=None) -> tuple[Reinforce, list[dict]]:
    """ATLA's rounds (Zhang et al. 2021) for the adversarially trained agent saved in
    ``path``: in each of ``--atla-rounds``, a learned adversary is trained against the agent
    (``train_adversary``, at ``--train-eps``), then the agent trains ``--atla-steps`` more at
    ``--atla-learning-rate`` with that adversary (the trained version, greedy) as one more
    objective of its training attack (``ObjectivePerEnvironment``: it attacks every
    ``k``-th environment). The agent is saved back into ``path`` after each round.

    Returns:
      The agent, and per round the adversary's ``selection`` (the agent's return against
      the clone and the trained version at each eps, before the round's training): how
      strong the adversary was that the agent then trained against.
    """
    discrete = isinstance(evaluation.action_space, gym.spaces.Discrete)
    start = int(evaluation.action_space.start) if discrete else 0
    rounds = []
    agent = Reinforce.load(path, env=config.env)
    for _ in range(config.atla_rounds):
        versions, selection = train_adversary(agent, config, evaluation, seed,
                                               eps=config.train_eps)
        rounds.append(selection)
        learned = LearnedAdversaryHook(versions["trained"].greedy_function(), 0.0,
                                       eps_scale=evaluation.scale, director=discrete,
                                       action_start=start)
        hook = ObjectivePerEnvironment(
            [training_hook(config, evaluation.scale, evaluation.action_space, seed), learned])
        hook.eps.assign(config.train_eps)
        agent = Reinforce.load(path, env=config.env, observation_hook=hook)
        agent.set_learning_rate(config.atla_learning_rate)
        agent.train(config.atla_steps, callback=recorder("atla", seed, [hook], rows, tensorboard),
                    progress=config.progress)
        agent.close()
        agent.save(path)
        for version in versions.values():
            version.close()
    return agent, rounds


class Evaluation:
    """The attacks of an evaluation, compiled once per run rather than once per agent and
    attack (about 1.5 s each): one network shaped as the agents', into which each agent's
    weights are copied before it is attacked (same weights, same graph: the same numbers),
    and one attack per name, its eps assigned and its random stream reset at each use."""

    def __init__(self, config: ExperimentConfig, scale, action_space):
        self.config, self.scale, self.action_space = config, scale, action_space
        self.model = None
        self._attacks, self._compiled = {}, {}

    def victim(self, agent: Reinforce):
        """The shared network, holding ``agent``'s policy weights."""
        if self.model is None:
            self.model = keras.models.clone_model(agent.policy.model)
        self.model.set_weights(agent.policy.model.get_weights())
        return self.model

    def attack(self, name: str, eps: float, seed: int) -> ObservationAttack:
        """The attack called ``name`` at ``eps``, its stream reset to ``seed``."""
        if name not in self._attacks:
            self._attacks[name] = make_attack(name, eps, self.scale, self.action_space,
                                              self.config)
        attack = self._attacks[name]
        attack.eps.assign(eps)
        attack.generator.reset_from_seed(seed)
        return attack

    def perturb(self, name: str, obs: np.ndarray) -> np.ndarray:
        """The attack's perturbed ``obs`` (flat float32) against the network as it holds now,
        at the eps and stream ``attack`` last set."""
        if name not in self._compiled:
            attack, model = self._attacks[name], self.model
            self._compiled[name] = tf.function(lambda obs: attack(model, obs))
        return self._compiled[name](tf.constant(obs, tf.float32)).numpy()


def adversary_env(config: ExperimentConfig, victim: Reinforce, eps: float, scale):
    """The learned adversary's environment against ``victim`` at ``eps``: a ``DirectorEnv``
    (it names the action to induce) for Discrete actions, else an ``AdversaryEnv`` (it
    perturbs each feature)."""
    env_class = (DirectorEnv if isinstance(victim.action_space, gym.spaces.Discrete)
                 else AdversaryEnv)
    return env_class(config.env, victim.greedy_policy(), eps, eps_scale=scale)


def train_adversary(victim: Reinforce, config: ExperimentConfig, evaluation: Evaluation,
                    seed: int, eps: float | None = None) -> tuple[dict[str, Reinforce], dict]:
    """The learned adversary of one victim, trained at ``eps`` (default: the largest eps of
    the evaluation), in two versions, and which of them attacks at each eps.

    It starts from a clone (``Reinforce.imitate``) of the untargeted gradient attack, on the
    states that attack leads the victim to: for Discrete actions (``adversary_env``: a
    ``DirectorEnv``), asking at every step for the action the victim likes least (its lowest
    logit at the true observation; with two actions, the one ``pgd``'s flip objective pushes it
    to); for Box actions, ``pgd``'s perturbation in units of the budget. An adversary exploring
    from scratch can see the same return in every episode (a CartPole victim that survives its
    random choices) and learn nothing. REINFORCE then improves on the clone by planning over
    whole episodes (the ``trained`` version). It can also leave it weaker, at some eps or all,
    so at each eps of the evaluation both versions play ``SELECTION_EPISODES`` episodes of their
    own (never the evaluation's), and the one that leaves the victim the lower return attacks at
    that eps (the clone on a tie): an attack is as strong as its strongest version.

    Returns:
      ``({"clone": agent, "trained": agent}, selection)``, ``selection`` holding per eps the
      victim's mean return against each version in those episodes and the version ``kept``.
    """
    eps, scale = float(config.eps_values[-1] if eps is None else eps), evaluation.scale
    factory = partial(adversary_env, config, victim, eps, scale)
    agent_config = dataclasses.replace(config.agent, seed=seed,
                                       learning_rate=config.adversary_learning_rate,
                                       num_envs=config.adversary_envs)
    adversary = Reinforce(factory, agent_config)
    env, seen, demonstrated = factory(), [], []
    director = isinstance(env, DirectorEnv)
    if director:
        logits = HostForward(victim.policy.model)  # the victim's logits, as it acts: in NumPy
        logits.sync()
    else:
        evaluation.victim(victim)
        evaluation.attack("pgd", eps, seed)
        bound = eps * np.asarray(scale, np.float32)
    try:
        for k in range(DEMONSTRATION_EPISODES):
            obs, _ = env.reset(seed=30_000 + 100 * seed + k)
            done = False
            while not done:
                flat = np.asarray(obs, np.float32).reshape(1, -1)
                if director:  # the action the victim likes least (of two: the other)
                    action = int(np.argmin(logits.forward(flat)[0]))
                else:
                    action = np.clip((evaluation.perturb("pgd", flat) - flat) / bound, -1, 1)[0]
                seen.append(obs)
                demonstrated.append(action)
                obs, _, terminated, truncated, _ = env.step(action)
                done = terminated or truncated
    finally:
        env.close()
    # Box: targets just inside the bounds, where the tanh squash still has a gradient.
    adversary.imitate(np.array(seen), np.array(demonstrated) if director
                      else 0.95 * np.array(demonstrated))
    clone = Reinforce(factory, agent_config)  # imitation touches only the weights
    clone.policy.model.set_weights(adversary.policy.model.get_weights())
    adversary.train(config.adversary_steps, progress=config.progress)
    versions = {"clone": clone, "trained": adversary}
    selection = {}
    with factory() as env:
        for eps in config.eps_values[1:]:
            env.eps = eps
            returns = {name: float(np.mean(victim_returns(
                env, version.greedy_policy(), SELECTION_EPISODES, seed=40_000 + 100 * seed)))
                for name, version in versions.items()}
            kept = "trained" if returns["trained"] < returns["clone"] else "clone"
            selection[str(float(eps))] = {**returns, "kept": kept}
    for version in versions.values():
        version.close()
    return versions, selection


def evaluate_agent(agent: Reinforce, config: ExperimentConfig, evaluation: Evaluation,
                   seed: int, learned: dict | None = None) -> dict:
    """``{attack: {eps: [episode returns]}}``, the clean returns under every attack at eps 0;
    ``learned`` if the learned adversary's version per eps (``{eps: Reinforce}``, trained
    against ``agent``) is given."""
    eval_seed = 10_000 + 100 * seed
    clean = agent.evaluate_parallel(config.eval_episodes, seed=eval_seed).tolist()
    model = evaluation.victim(agent)
    results = {}
    for name in attack_names(agent.action_space, learned=False):
        results[name] = {"0.0": clean}
        for eps in config.eps_values[1:]:
            attack = evaluation.attack(name, eps, seed)  # each eps: the same random stream
            returns = agent.evaluate_parallel(
                config.eval_episodes, seed=eval_seed,
                wrap=lambda envs, attack=attack: AttackedVectorObservations(envs, model, attack))
            results[name][str(float(eps))] = returns.tolist()
    if learned is not None:
        results["learned"] = {"0.0": clean}
        with adversary_env(config, agent, 0.0, evaluation.scale) as env:
            for eps in config.eps_values[1:]:
                env.eps = eps
                results["learned"][str(float(eps))] = victim_returns(
                    env, learned[str(float(eps))].greedy_policy(), config.eval_episodes,
                    seed=eval_seed).tolist()
    return results


def summarize(config: ExperimentConfig, evaluations: dict, training: dict, max_return: float,
              obs_std) -> dict:
    """Per-seed mean returns per kind, attack and eps; the worst case; intervals;
    comparisons between kinds; the targets."""
    seeds = [str(s) for s in config.seeds]
    eps_keys = [str(float(e)) for e in config.eps_values]
    returns, worst, gradient_worst = {}, {}, {}
    for kind in config.kinds:
        per_attack = {}
        for name in evaluations[kind][seeds[0]]:
            per_attack[name] = {e: [float(np.mean(evaluations[kind][s][name][e])) for s in seeds]
                                for e in eps_keys}
        returns[kind] = per_attack

        worst[kind] = _lowest(per_attack, [n for n in per_attack if n != "random"])
        gradient_worst[kind] = _lowest(per_attack, [n for n in per_attack
                                                    if n not in ("random", "learned")])
    mean = lambda values: float(np.mean(values))
    curves = {kind: {**returns[kind], "worst": worst[kind]} for kind in config.kinds}
    means = {kind: {name: {e: mean(v) for e, v in per_eps.items()}
                    for name, per_eps in curves[kind].items()} for kind in config.kinds}
    intervals = {kind: {name: {e: records.with_interval(v) for e, v in per_eps.items()}
                        for name, per_eps in curves[kind].items()} for kind in config.kinds}
    return {"env": config.env, "eps_unit": "observation standard deviations", "obs_std": obs_std,
            "seeds": [int(s) for s in seeds], "eval_episodes": config.eval_episodes,
            "mean": means, "intervals": intervals, "returns": returns, "worst": worst,
            "gradient_worst": gradient_worst, "training": training,
            "comparisons": compare_kinds(intervals, eps_keys),
            "targets": targets(config, worst, gradient_worst, returns, max_return)}


def _lowest(per_attack: dict, names: list[str]) -> dict:
    """``{eps: [per seed, the lowest return over the attacks named]}``."""
    any_attack = per_attack[names[0]]
    return {e: [min(per_attack[n][e][i] for n in names) for i in range(len(values))]
            for e, values in any_attack.items()}


def compare_kinds(intervals: dict, eps_keys: list[str]) -> list[dict]:
    """For each pair of kinds and eps > 0: which one's worst-case mean is higher, and whether
    that holds beyond the seeds (``significant``: their 95% intervals do not overlap, with
    at least ``MIN_SEEDS_FOR_INTERVALS`` seeds)."""
    comparisons = []
    for a, b in itertools.combinations(intervals, 2):
        for e in eps_keys[1:]:
            x, y = intervals[a]["worst"][e], intervals[b]["worst"][e]
            higher, lower = (a, b) if x["mean"] >= y["mean"] else (b, a)
            hi, lo = intervals[higher]["worst"][e], intervals[lower]["worst"][e]
            comparisons.append({"eps": float(e), "higher": higher, "lower": lower,
                                "difference": hi["mean"] - lo["mean"],
                                "significant": (hi["ci95"][0] > lo["ci95"][1] and
                                                len(hi["per_seed"]) >= MIN_SEEDS_FOR_INTERVALS)})
    return comparisons


def targets(config: ExperimentConfig, worst, gradient_worst, returns, max_return) -> dict:
    """The robust kinds' worst case against ``TARGETS`` (per kind: each condition's value and
    whether it is met), and, per eps, whether the learned adversary drives the standard agents
    lower than the best gradient attack (mean over seeds): the issue's bar, each seed's lowest
    gradient attack, and the single gradient attack with the lowest mean; each with the
    bootstrap interval of the per-seed differences (paired: the same agents)."""
    result = {"max_return": max_return}
    for kind in config.kinds:
        if kind == "standard":
            continue
        checks = {}
        for eps, statistic, fraction, share in TARGETS.get(config.env, ()):
            if eps not in worst[kind]:
                continue
            values, bar = np.array(worst[kind][eps]), fraction * max_return
            if statistic == "median":
                name, value = f"eps {eps}: median >= {bar:g}", float(np.median(values))
                met = value >= bar
            else:
                name, value = (f"eps {eps}: seeds >= {bar:g} (need {share:.0%})",
                               int((values >= bar).sum()))
                met = value >= np.ceil(share * len(values) - 1e-9)
            checks[name] = {"value": value, "met": bool(met)}
        clean = worst[kind]["0.0"]
        checks["clean: every seed at the maximum"] = {
            "value": float(min(clean)), "met": bool(min(clean) >= max_return)}
        result[kind] = checks
    standard = returns["standard"]
    if "learned" in standard:
        gradient = [n for n in standard if n not in ("random", "learned")]
        result["learned_vs_gradient_standard"] = {}
        for e in list(worst["standard"])[1:]:
            per_seed = np.array(standard["learned"][e])
            learned = float(np.mean(per_seed))
            strongest = min(gradient, key=lambda n: np.mean(standard[n][e]))
            result["learned_vs_gradient_standard"][e] = {
                "learned": learned,
                # Per seed, the lowest of the gradient attacks: the bar.
                "best_gradient": float(np.mean(gradient_worst["standard"][e])),
                "learned_lower": bool(learned < np.mean(gradient_worst["standard"][e])),
                # Paired over seeds (same victims): significant where the interval of the
                # per-seed differences lies below 0.
                "learned_minus_best_gradient": records.with_interval(
                    per_seed - np.array(gradient_worst["standard"][e])),
                # The one gradient attack with the lowest mean over seeds.
                "strongest_gradient_attack": strongest,
                "strongest_gradient_attack_mean": float(np.mean(standard[strongest][e])),
                "learned_lower_than_strongest_attack": bool(
                    learned < np.mean(standard[strongest][e])),
                "seeds_learned_lower_than_strongest_attack": int(np.sum(
                    per_seed < np.array(standard[strongest][e]))),
                "learned_minus_strongest_attack": records.with_interval(
                    per_seed - np.array(standard[strongest][e]))}
    return result


def plot_return_vs_eps(summary: dict, config: ExperimentConfig, path):
    """One panel per kind (every attack's mean over seeds, its bootstrap 95% interval as a
    band), and the kinds' worst cases side by side."""
    eps = [float(e) for e in config.eps_values]
    kinds = config.kinds
    fig, axes = records.subplots(1, len(kinds) + 1, figsize=(4.2 * (len(kinds) + 1), 4.3),
                                 sharey=True, layout="constrained")

    def curve(ax, interval, label, **style):
        points = [interval[str(e)] for e in eps]
        ax.plot(eps, [p["mean"] for p in points], label=label, marker="o", ms=3, **style)
        ax.fill_between(eps, [p["ci95"][0] for p in points], [p["ci95"][1] for p in points],
                        color=style["color"], alpha=0.12, linewidth=0)

    for ax, kind in zip(axes, kinds):
        for i, (name, interval) in enumerate(summary["intervals"][kind].items()):
            style = {"color": "k", "lw": 2.2} if name == "worst" else {"color": f"C{i}"}
            if name == "random":
                style["ls"] = "--"
            curve(ax, interval, name, **style)
        ax.set(title=f"{kind} agents")
    for i, kind in enumerate(kinds):
        curve(axes[-1], summary["intervals"][kind]["worst"], kind, color=f"C{i}", lw=2)
    axes[-1].set(title="worst case, by kind")
    for ax in axes:
        ax.axhline(summary["targets"]["max_return"], color="gray", lw=0.8, ls=":")
        ax.set(xlabel="L-infinity eps (observation std units)")
        ax.grid(alpha=0.3)
    axes[0].set(ylabel="return: mean over seeds, band: bootstrap 95% interval")
    axes[-2].legend(fontsize=7, loc="lower left")
    axes[-1].legend(fontsize=8, loc="lower left")
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
    """The first seed's standard agent, clean and under its worst gradient attack at the
    largest eps."""
    feature, label = PLOT_FEATURE.get(config.env, (0, "observation feature 0"))
    eps = float(config.eps_values[-1])
    seed = config.seeds[0]
    names = [n for n in summary["returns"]["standard"] if n not in ("random", "learned")]
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
    features = observation_size(probe.observation_space)
    if config.obs_std is not None and len(config.obs_std) != features:
        raise ValueError(f"obs_std must hold one number per observation feature: {features} "
                         f"for {config.env}. Received: obs_std={config.obs_std!r}")
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

    The trained agents and adversaries are outputs (``agents/``, ``adversaries/``); a resumed
    run loads the agents. The progress records each agent after it is saved, with the
    training rows, and each evaluation (its adversary saved first)."""
    max_return = float(probe.max_steps)  # one reward per step up to the time limit
    state = run.progress({"training_rows": [], "tensorboard_rows": [], "training": {},
                          "evaluations": {k: {} for k in config.kinds},
                          "obs_std": config.obs_std and list(config.obs_std)})
    agents = {kind: {} for kind in config.kinds}

    @cache
    def shared_evaluation():  # once the unit of eps is known
        return Evaluation(config, state["obs_std"], probe.action_space)

    def saved(what, kind, seed):
        return run.path / what / kind / f"seed_{seed}"

    def save_progress(*saves):
        """Saves each ``(agent, path)`` of ``saves``, then the progress that records them."""
        with interrupts_deferred():  # the agents and the record of them, or neither
            for agent, path in saves:
                agent.save(path)
            run.save_progress(state)
            records.write_csv(run.path / "training.csv", state["training_rows"])

    with run.tensorboard(("kind", "seed"), "env_steps",
                         state["tensorboard_rows"]) as tensorboard:
        for kind in config.kinds:
            if kind != "standard" and state["obs_std"] is None:
                state["obs_std"] = observation_std(agents["standard"], config)
                save_progress()
            for seed in config.seeds:
                key = f"{kind}/{seed}"
                if key in state["training"]:
                    with run.reading(saved("agents", kind, seed)):
                        agents[kind][seed] = Reinforce.load(saved("agents", kind, seed),
                                                            env=config.env)
                    continue
                rows, path, extra = [], saved("agents", kind, seed), {}
                if kind == "atla":
                    agent, extra["atla_rounds"] = _train_atla_agent(
                        config, seed, agents, state, shared_evaluation(), rows, tensorboard)
                else:
                    agent = train_agent(config, kind, seed, state["obs_std"],
                                        probe.action_space, rows, tensorboard)
                agents[kind][seed] = agent
                state["training_rows"] += rows
                state["tensorboard_rows"] = list(tensorboard.rows)
                state["training"][key] = {"final_mean_return": rows[-1]["running_mean_return"],
                                          "env_steps": agent.env_steps, **extra}
                save_progress((agent, path))
    if len(config.kinds) == 1:  # standard alone: obs_std from them, measured now
        state["obs_std"] = state["obs_std"] or observation_std(agents["standard"], config)
    evaluation = shared_evaluation()
    for kind in config.kinds:
        for seed in config.seeds:
            if str(seed) in state["evaluations"][kind]:
                continue
            agent = agents[kind][seed]
            versions, learned = {}, None
            if config.adversary_steps:
                versions, selection = train_adversary(agent, config, evaluation, seed)
                learned = {e: versions[v["kept"]] for e, v in selection.items()}
                state.setdefault("adversaries", {k: {} for k in config.kinds})
                state["adversaries"][kind][str(seed)] = selection
            state["evaluations"][kind][str(seed)] = evaluate_agent(agent, config, evaluation,
                                                                   seed, learned)
            save_progress(*((version, saved("adversaries", kind, seed) / name)
                            for name, version in versions.items()))
    summary = summarize(config, state["evaluations"], state["training"], max_return,
                        state["obs_std"])
    if "adversaries" in state:
        summary["adversaries"] = state["adversaries"]
    rows = [{"kind": kind, "seed": int(seed), "attack": name, "eps": float(eps),
             "mean_return": float(np.mean(r)), "min_return": float(np.min(r)),
             "max_return": float(np.max(r)), "episodes": len(r)}
            for kind in config.kinds for seed, per_attack in state["evaluations"][kind].items()
            for name, per_eps in per_attack.items() for eps, r in per_eps.items()]
    return records.write_results(run.path, rows, summary), agents


def _train_atla_agent(config, seed, agents, state, evaluation, rows, tensorboard):
    """An ``atla`` agent: this seed's ``adversarial`` agent of this run if there is one (its
    training rows copied: ``atla`` trains the same way up to there, so the numbers would be
    the same), else trained here, then ``train_atla``'s rounds."""
    base = agents.get("adversarial", {}).get(seed)
    if base is None:
        base = train_agent(config, "atla", seed, state["obs_std"], evaluation.action_space,
                           rows, tensorboard)
    else:
        rows += [{**row, "kind": "atla"} for row in state["training_rows"]
                 if row["kind"] == "adversarial" and row["seed"] == seed]
        for row in list(tensorboard.rows):
            if row["kind"] == "adversarial" and row["seed"] == seed:
                tensorboard.add({**row, "kind": "atla"})
    with tempfile.TemporaryDirectory() as scratch:  # the rounds' own save, until it is done
        base.save(scratch)
        agent, rounds = train_atla(config, seed, evaluation, Path(scratch), rows, tensorboard)
    return agent, rounds


def report(config: ExperimentConfig, summary: dict, out) -> None:
    for kind in config.kinds:
        line = "  ".join(f"eps {float(e):g}: {v['mean']:.0f} [{v['ci95'][0]:.0f}, "
                         f"{v['ci95'][1]:.0f}]"
                         for e, v in summary["intervals"][kind]["worst"].items())
        print(f"{kind:11s} worst-case mean return [95% interval]  {line}")
    for c in summary["comparisons"]:
        verdict = "significant" if c["significant"] else "not significant (intervals overlap)"
        print(f"eps {c['eps']:g}: {c['higher']} > {c['lower']} by {c['difference']:.0f}, "
              f"{verdict}")
    print(f"targets: {json.dumps(summary['targets'])}; results in {out}")


if __name__ == "__main__":
    run_command(main)
