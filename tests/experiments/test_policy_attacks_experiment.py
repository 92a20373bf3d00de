import csv
import json
import re

import numpy as np
import pytest

from agents import Reinforce
from attacks.learned_adversary import DirectorEnv, victim_returns
from experiments import policy_attacks as experiment
from experiments import records

QUICK = ["--seeds", "0", "1", "--total-steps", "1000", "--eval-episodes", "1",
         "--eps-values", "0", "0.5", "--adversary-steps", "500", "--no-progress"]
ATTACKS = {"random", "fgsm", "pgd", "mad", "pgd_toward_0", "pgd_toward_1", "learned"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("policy_attacks") / "out"
    return out, experiment.main(QUICK + ["--out", str(out)])


def test_quick_run_writes_every_file_and_per_seed_returns(quick_run):
    out, summary = quick_run
    assert {p.name for p in out.iterdir()} == {
        "config.json", "training.csv", "metrics.csv", "summary.json", "return_vs_eps.png",
        "episode.png", "agents", "adversaries", "tensorboard", "run.json"}
    assert json.loads((out / "summary.json").read_text()) == summary
    for kind in ("standard", "adversarial", "regularized"):
        assert set(summary["returns"][kind]) == ATTACKS
        for version in ("clone", "trained"):
            assert (out / "adversaries" / kind / "seed_1" / version / "agent.json").exists()
        for per_eps in summary["returns"][kind].values():
            assert set(per_eps) == {"0.0", "0.5"} and all(len(v) == 2 for v in per_eps.values())
        # The worst case is the minimum over every attack but noise, seed by seed; the
        # gradient worst case leaves the learned adversary out.
        for i in range(2):
            assert summary["worst"][kind]["0.5"][i] == min(
                summary["returns"][kind][a]["0.5"][i] for a in ATTACKS - {"random"})
            assert summary["gradient_worst"][kind]["0.5"][i] == min(
                summary["returns"][kind][a]["0.5"][i] for a in ATTACKS - {"random", "learned"})
        # Every attack's eps-0 entry is the same clean evaluation.
        assert len({tuple(v["0.0"]) for v in summary["returns"][kind].values()}) == 1
        interval = summary["intervals"][kind]["worst"]["0.5"]
        assert interval["per_seed"] == summary["worst"][kind]["0.5"]
        assert interval["ci95"][0] <= interval["mean"] <= interval["ci95"][1]
    # Two seeds are too few for an interval: no difference is called significant.
    assert len(summary["comparisons"]) == 3 and not any(
        c["significant"] for c in summary["comparisons"])
    assert len(summary["obs_std"]) == 4 and all(s > 0 for s in summary["obs_std"])
    for kind in ("standard", "adversarial", "regularized"):  # the stronger version attacks
        for per_eps in summary["adversaries"][kind].values():
            assert set(per_eps) == {"0.5"}
            for record in per_eps.values():
                assert record["kept"] == ("trained" if record["trained"] < record["clone"]
                                          else "clone")
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * len(ATTACKS) * 2  # kinds x seeds x attacks x eps
    with open(out / "training.csv") as f:
        training = list(csv.DictReader(f))
    for kind in ("adversarial", "regularized"):  # the ramp
        ramp = [float(r["train_eps"]) for r in training if r["kind"] == kind]
        assert ramp[0] == 0.0 and max(ramp) == pytest.approx(0.5)
    assert {float(r["train_eps"]) for r in training if r["kind"] == "standard"} == {0.0}


def test_comparisons_call_a_difference_significant_only_when_intervals_part():
    def kind(values):
        return {"worst": {"0.0": records.with_interval([500] * len(values)),
                          "0.5": records.with_interval(values)}}
    intervals = {"standard": kind([100, 120, 90, 110, 105, 95]),
                 "adversarial": kind([400, 380, 420, 410, 390, 405]),
                 "regularized": kind([130, 90, 400, 80, 120, 100])}
    found = {(c["higher"], c["lower"]): c for c in
             experiment.compare_kinds(intervals, ["0.0", "0.5"])}
    assert set(found) == {("adversarial", "standard"), ("regularized", "standard"),
                          ("adversarial", "regularized")}
    assert found[("adversarial", "standard")]["significant"]
    assert found[("adversarial", "standard")]["difference"] == pytest.approx(2405 / 6 - 620 / 6)
    assert not found[("regularized", "standard")]["significant"]  # one lucky seed
    few = {k: {"worst": {"0.0": v["worst"]["0.0"], "0.5": records.with_interval(
        v["worst"]["0.5"]["per_seed"][:4])}} for k, v in intervals.items()}
    assert not any(c["significant"] for c in experiment.compare_kinds(few, ["0.0", "0.5"]))


def test_targets_follow_the_issue_thresholds_on_cartpole():
    config = experiment.ExperimentConfig(seeds=tuple(range(10)))
    worst = {"standard": {"0.0": [500.0] * 10, "0.5": [100.0] * 10},
             "adversarial": {"0.0": [500.0] * 10, "0.5": [460.0] * 9 + [300.0]},
             "regularized": {"0.0": [500.0] * 9 + [499.0], "0.5": [460.0] * 8 + [300.0] * 2}}
    returns = {"standard": {"random": {"0.0": [500.0] * 10, "0.5": [50.0] * 10},
                            "pgd": {"0.0": [500.0] * 10, "0.5": [120.0] * 5 + [80.0] * 5},
                            "mad": {"0.0": [500.0] * 10, "0.5": [95.0] * 10},
                            "learned": {"0.0": [500.0] * 10, "0.5": [90.0] * 10}}}
    targets = experiment.targets(config, worst, worst, returns, 500.0)
    adversarial, regularized = targets["adversarial"], targets["regularized"]
    assert adversarial["eps 0.5: median >= 450"] == {"value": 460.0, "met": True}
    assert adversarial["eps 0.5: seeds >= 400 (need 90%)"] == {"value": 9, "met": True}
    assert adversarial["clean: every seed at the maximum"]["met"]
    assert regularized["eps 0.5: seeds >= 400 (need 90%)"] == {"value": 8, "met": False}
    assert not regularized["clean: every seed at the maximum"]["met"]
    # Noise is no gradient attack: mad (mean 95) is the strongest one, pgd's mean being 100.
    learned = targets["learned_vs_gradient_standard"]["0.5"]
    paired = {name: learned.pop(name) for name in ("learned_minus_best_gradient",
                                                    "learned_minus_strongest_attack")}
    assert learned == {
        "learned": 90.0, "best_gradient": 100.0, "learned_lower": True,
        "strongest_gradient_attack": "mad", "strongest_gradient_attack_mean": 95.0,
        "learned_lower_than_strongest_attack": True,
        "seeds_learned_lower_than_strongest_attack": 10}
    # Paired per seed: learned minus each seed's gradient worst case, and minus mad's.
    assert paired["learned_minus_best_gradient"]["per_seed"] == [-10.0] * 10
    assert paired["learned_minus_best_gradient"]["ci95"] == [-10.0, -10.0]  # significant
    assert paired["learned_minus_strongest_attack"]["per_seed"] == [-5.0] * 10
    mixed = {"standard": {"0.0": [500.0] * 10, "0.5": [80.0] * 5 + [100.0] * 5}}
    paired = experiment.targets(config, worst, mixed, returns, 500.0)[
        "learned_vs_gradient_standard"]["0.5"]["learned_minus_best_gradient"]
    assert paired["per_seed"] == [10.0] * 5 + [-10.0] * 5 and paired["mean"] == 0.0
    assert paired["ci95"][0] < 0 < paired["ci95"][1]  # not significant


def test_each_eps_is_attacked_by_the_version_whose_return_was_recorded(quick_run):
    """``train_adversary`` returns the clone (its weights as imitation left them) and the
    trained adversary; at each eps, the version it keeps leaves the victim exactly the return
    recorded for it in the selection episodes."""
    out, summary = quick_run
    config = experiment.ExperimentConfig(seeds=(0,), eps_values=(0.0, 0.3, 0.5),
                                         adversary_steps=2_000, progress=False)
    victim = Reinforce.load(out / "agents" / "standard" / "seed_0")
    evaluation = experiment.Evaluation(config, summary["obs_std"], victim.action_space)
    versions, selection = experiment.train_adversary(victim, config, evaluation, seed=0)
    assert versions["trained"].env_steps >= 2_000 and versions["clone"].env_steps == 0
    assert set(selection) == {"0.3", "0.5"}
    with experiment.adversary_env(config, victim, 0.0, summary["obs_std"]) as env:
        assert isinstance(env, DirectorEnv)  # CartPole's actions are Discrete
        for eps, record in selection.items():
            env.eps = float(eps)
            for name, version in versions.items():
                again = victim_returns(env, version.greedy_policy(),
                                       experiment.SELECTION_EPISODES, seed=40_000)
                assert float(np.mean(again)) == record[name]


def test_bad_flags_are_usage_errors(read_error, tmp_path):
    for flags, message in ((["--eps-values", "0.5", "1"], "eps_values must start at 0"),
                           (["--eps-values", "0", "1", "0.5"], "eps_values must be one or more "
                                                                "distinct values, in increasing"),
                           (["--train-method", "cw"], "train_method must be one of"),
                           (["--eps-values", "0", "nan"],
                            "eps_values[1] must be a finite number >= 0. Received: "
                            "eps_values[1]=nan"),
                           (["--train-eps", "inf"], "train_eps must be a finite number > 0"),
                           (["--kinds", "regularized", "standard"],
                            "kinds must start with standard"),
                           (["--kinds", "standard", "sa"], "kinds[1] must be one of"),
                           (["--adversary-steps", "-1"], "adversary_steps must be"),
                           (["--adversary-envs", "0"], "adversary_envs must be an integer"),
                           (["--obs-std", "0.5", "0"], "obs_std[1] must be > 0")):
        with pytest.raises(SystemExit):
            experiment.main(flags + ["--out", str(tmp_path / "out")])
        assert message in read_error()
    assert not any(tmp_path.iterdir())


def test_an_obs_std_of_the_wrong_length_fails_before_anything_is_written(tmp_path):
    with pytest.raises(SystemExit, match=re.escape(
            "obs_std must hold one number per observation feature: 4 for CartPole-v1. "
            "Received: obs_std=(0.5, 0.2)")):
        experiment.main(["--obs-std", "0.5", "0.2", "--out", str(tmp_path / "out")])
    assert not any(tmp_path.iterdir())


def test_a_given_obs_std_is_the_unit_of_eps(tmp_path):
    # Another run's unit, so that two runs attack with the same budgets: nothing is measured.
    unit = [0.7, 0.25, 0.025, 0.2]
    summary = experiment.main(["--kinds", "standard", "--seeds", "0", "--total-steps", "1000",
                               "--eval-episodes", "1", "--eps-values", "0", "0.5",
                               "--adversary-steps", "0", "--no-progress", "--obs-std",
                               *map(str, unit), "--out", str(tmp_path / "out")])
    assert summary["obs_std"] == unit
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["config"]
    assert saved["obs_std"] == unit


def test_quick_caps_what_runs():
    config = experiment.ExperimentConfig(quick=True).resolved()
    assert config.seeds == (0,) and config.total_steps == 10_000
    assert config.eps_values == (0.0, 0.5) and config.eval_episodes == 1
    assert config.adversary_steps == 5_000 and config.atla_steps == 5_000
    assert experiment.ExperimentConfig().resolved() == experiment.ExperimentConfig()


def test_quick_run_writes_tensorboard_runs_matching_training(quick_run, tensorboard_holds):
    out, _ = quick_run
    tensorboard_holds(out / "tensorboard", out / "training.csv", ("kind", "seed"), "env_steps",
                      ("mean_return", "running_mean_return", "train_eps"))


def test_a_run_killed_outright_resumes_with_every_update_in_tensorboard(
        quick_run, tmp_path, kill_when, tensorboard_holds):
    """SIGKILL once an agent is trained: the resumed run ends with the numbers of a run never
    stopped (Ctrl-C's message and the lock are tested in test_run_folder.py)."""
    _, expected = quick_run
    out = tmp_path / "out"
    progress = tmp_path / "out.partial" / "progress" / "progress.json"

    def an_agent_is_trained():
        return len(json.loads(progress.read_text())["training"]) >= 1

    kill_when("experiments.policy_attacks", QUICK + ["--out", str(out)], an_agent_is_trained)
    assert experiment.main(QUICK + ["--out", str(out), "--resume"]) == expected
    with open(out / "training.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    tensorboard_holds(out / "tensorboard", rows, ("kind", "seed"), "env_steps",
                      ("mean_return", "running_mean_return", "train_eps"))


ATLA = ["--seeds", "0", "--total-steps", "1000", "--eval-episodes", "1", "--eps-values", "0",
        "0.5", "--adversary-steps", "500", "--atla-steps", "600", "--no-progress"]


def test_atla_agents_continue_the_adversarial_agent_against_learned_adversaries(
        tmp_path, tensorboard_holds):
    both = experiment.main(ATLA + ["--kinds", "standard", "adversarial", "atla",
                                   "--out", str(tmp_path / "both")])
    alone = experiment.main(ATLA + ["--kinds", "standard", "atla",
                                    "--out", str(tmp_path / "alone")])
    # Trained from the run's adversarial agent or from scratch: the same agent.
    assert alone["returns"]["atla"] == both["returns"]["atla"]
    assert alone["training"]["atla/0"] == both["training"]["atla/0"]
    assert set(alone["returns"]["atla"]) == ATTACKS
    rounds = both["training"]["atla/0"]["atla_rounds"]
    assert len(rounds) == 2  # the default, each with the adversary's strength before it
    for selection in rounds:
        assert set(selection) == {"0.5"}
        record = selection["0.5"]
        assert record["kept"] == ("trained" if record["trained"] < record["clone"] else "clone")
    with open(tmp_path / "both" / "training.csv") as f:
        training = list(csv.DictReader(f))
    adversarial = [r for r in training if r["kind"] == "adversarial"]
    atla = [r for r in training if r["kind"] == "atla"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "kind"} for r in rows]  # noqa: E731
    assert strip(atla[:len(adversarial)]) == strip(adversarial)  # then the rounds
    after = atla[len(adversarial):]
    assert after and {float(r["train_eps"]) for r in after} == {0.5}
    steps = [int(r["env_steps"]) for r in atla]
    assert steps == sorted(steps) and steps[-1] >= int(adversarial[-1]["env_steps"]) + 2 * 600
    assert both["training"]["atla/0"]["env_steps"] == steps[-1]
    tensorboard_holds(tmp_path / "both" / "tensorboard", tmp_path / "both" / "training.csv",
                      ("kind", "seed"), "env_steps",
                      ("mean_return", "running_mean_return", "train_eps"))
    saved = Reinforce.load(tmp_path / "both" / "agents" / "atla" / "seed_0")
    assert saved.config.learning_rate == 0.005 and saved.env_steps == steps[-1]


def test_atla_needs_a_learned_adversary(read_error, tmp_path):
    with pytest.raises(SystemExit):
        experiment.main(["--kinds", "standard", "atla", "--adversary-steps", "0",
                         "--out", str(tmp_path / "out")])
    assert "adversary_steps must be >= 1 with kinds ('standard', 'atla')" in read_error()
    for flags, message in ((["--atla-rounds", "0"], "atla_rounds must be"),
                           (["--atla-steps", "-5"], "atla_steps must be"),
                           (["--atla-learning-rate", "0"], "atla_learning_rate must be")):
        with pytest.raises(SystemExit):
            experiment.main(flags + ["--out", str(tmp_path / "out")])
        assert message in read_error()
    assert not any(tmp_path.iterdir())
