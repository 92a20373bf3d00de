import csv
import dataclasses
import json
import os
import signal

import pytest

from agents import Reinforce
from experiments import reinforce as experiment

QUICK = ["--seeds", "0", "1", "--total-steps", "3000", "--eval-episodes", "2", "--no-progress"]


def test_writes_config_metrics_summary_plot_and_agents(tmp_path):
    summary = experiment.main(QUICK + ["--out", str(tmp_path), "--baseline"])
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "metrics.csv", "summary.json", "learning_curve.png", "agents"} <= names
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["config"]["agent"]["baseline"] is True
    assert config["config"]["seeds"] == [0, 1] and config["versions"]["tensorflow"]
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"seed", "env_steps", "episodes", "mean_return", "loss", "grad_norm", "entropy",
            "value_loss", "wall_seconds", "running_mean_return"} <= set(rows[0])
    for seed in ("0", "1"):
        steps = [int(r["env_steps"]) for r in rows if r["seed"] == seed]
        assert steps == sorted(steps) and steps[-1] >= 3000
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert set(summary["per_seed"]) == {"0", "1"} and summary["reward_threshold"] == 475.0
    for seed_summary in summary["per_seed"].values():
        assert seed_summary["solved_at_env_steps"] is None  # 3000 steps cannot solve CartPole
        assert 8 < seed_summary["final_mean_return"] < 475
    loaded = Reinforce.load(tmp_path / "agents" / "seed_1")
    assert loaded.config.seed == 1 and loaded.config.baseline


def test_median_treats_unsolved_as_never():
    assert experiment._median([100, None, 300]) == 300
    assert experiment._median([100, None, None]) is None
    assert experiment._median([1.0, 2.0]) == 1.5


def _metrics(folder):
    with open(folder / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in csv.DictReader(f)]


def _summary_without_times(folder):
    summary = json.loads((folder / "summary.json").read_text())
    for s in summary["per_seed"].values():
        s.pop("wall_seconds_to_solve")
    summary["median"].pop("wall_seconds_to_solve")
    return summary


def test_an_interrupted_run_keeps_the_old_results_and_resumes_exactly(tmp_path, monkeypatch):
    args = QUICK + ["--baseline", "--checkpoint-every", "2"]
    straight = tmp_path / "straight"
    experiment.main(args + ["--out", str(straight)])

    out = tmp_path / "out"
    experiment.main(QUICK + ["--out", str(out), "--seeds", "7", "--total-steps", "500"])
    old_summary = (out / "summary.json").read_text()
    calls = []
    original = Reinforce.collect

    def interrupted_collect(self):  # Ctrl-C while collecting seed 1's third batch
        calls.append(self.config.seed)
        if calls.count(1) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(Reinforce, "collect", interrupted_collect)
    with pytest.raises(KeyboardInterrupt):
        experiment.main(args + ["--out", str(out)])
    monkeypatch.setattr(Reinforce, "collect", original)
    # The finished run is untouched; the new one waits, visibly partial, with its checkpoint.
    assert (out / "summary.json").read_text() == old_summary
    partial = tmp_path / "out.partial"
    assert (partial / "agents" / "seed_0" / "agent.json").exists()
    assert not (partial / "agents" / "seed_1").exists()  # not under a finished agent's name
    # The Ctrl-C waited for the third update, which was saved (the last periodic save had two).
    assert json.loads((partial / "progress" / "agent" / "agent.json").read_text())[
        "updates"] == 3
    with pytest.raises(SystemExit, match="Pass --resume to continue it"):
        experiment.main(args + ["--out", str(out)])

    experiment.main(args + ["--out", str(out), "--resume"])
    assert not partial.exists() and not (out / "progress").exists()
    assert _metrics(out) == _metrics(straight)
    assert _summary_without_times(out) == _summary_without_times(straight)
    assert sorted(p.name for p in (out / "agents").iterdir()) == ["seed_0", "seed_1"]


def test_a_run_that_cannot_start_writes_nothing(tmp_path):
    out = tmp_path / "out"
    experiment.main(QUICK + ["--out", str(out), "--seeds", "0", "--total-steps", "500"])
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit, match="NoSuchEnv"):
        experiment.main(QUICK + ["--out", str(out), "--env", "NoSuchEnv-v0"])
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_flags_are_usage_errors(read_error):
    with pytest.raises(SystemExit):
        experiment.main(["--gamma", "1.5"])
    assert "gamma must be in (0.0, 1.0]" in read_error()
    with pytest.raises(SystemExit):
        experiment.main(["--total-steps", "0"])
    assert "total_steps must be an integer >= 1" in read_error()
    with pytest.raises(SystemExit):
        experiment.main(["--seeds", "0", "0"])
    assert "seeds must be one or more distinct" in read_error()


@pytest.mark.parametrize("flag, value", [("--learning-rate", "inf"), ("--l2", "inf"),
                                         ("--entropy-coef", "inf"), ("--gamma", "nan"),
                                         ("--max-grad-norm", "inf"), ("--init-log-std", "-inf")])
def test_non_finite_hyperparameters_are_usage_errors(flag, value, tmp_path, read_error):
    # These ran to exit 0 with NaN losses before.
    name = flag[2:].replace("-", "_")
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(QUICK + ["--out", str(tmp_path / "out"), flag, value])
    assert exit_info.value.code == 2
    assert f"{name} must be a finite number" in read_error()
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_run_killed_outright_resumes_from_its_last_checkpoint(tmp_path, kill_when,
                                                                tensorboard_holds):
    """SIGKILL, not Ctrl-C: nothing runs on the way out, so the run resumes from the last
    periodic checkpoint and must still end with the metrics of an unbroken run, and with
    TensorBoard events for every metrics row, none lost with the killed writer's buffer and
    none repeated."""
    args = ["--seeds", "0", "1", "--total-steps", "20000", "--eval-episodes", "2",
            "--no-progress", "--checkpoint-every", "3"]
    straight = tmp_path / "straight"
    experiment.main(args + ["--out", str(straight)])

    out = tmp_path / "out"
    progress = tmp_path / "out.partial" / "progress" / "progress.json"

    def seed_0_checkpointed_twice():
        state = json.loads(progress.read_text())
        return state["current"] and len(state["rows"]) >= 6

    kill_when("experiments.reinforce", args + ["--out", str(out)], seed_0_checkpointed_twice)
    assert not out.exists()

    experiment.main(args + ["--out", str(out), "--resume"])
    assert _metrics(out) == _metrics(straight)
    assert _summary_without_times(out) == _summary_without_times(straight)
    tensorboard_holds(out / "tensorboard", _metrics(out), ("seed",), "env_steps",
                      ("mean_return", "loss", "running_mean_return", "skipped_updates"))


def test_a_second_ctrl_c_mid_update_keeps_the_last_periodic_checkpoint(tmp_path, monkeypatch):
    args = QUICK + ["--seeds", "0", "--checkpoint-every", "2"]
    straight = tmp_path / "straight"
    experiment.main(args + ["--out", str(straight)])
    calls = []
    original = Reinforce.update

    def torn_update(self, batch):  # as a second Ctrl-C would, inside the third update
        calls.append(1)
        if len(calls) == 3:
            original(self, batch)  # the weights and Adam moved, the counters not yet:
            self.updates -= 1
            self.env_steps -= batch.env_steps
            self.episodes -= batch.valid.shape[1]
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Reinforce, "update", torn_update)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        experiment.main(args + ["--out", str(out)])
    monkeypatch.undo()
    checkpoint = tmp_path / "out.partial" / "progress" / "agent" / "agent.json"
    assert json.loads(checkpoint.read_text())["updates"] == 2  # not the torn state
    experiment.main(args + ["--out", str(out), "--resume"])
    assert _metrics(out) == _metrics(straight)


def test_quick_caps_what_runs():
    config = experiment.ExperimentConfig(quick=True).resolved()
    assert config.seeds == (0, 1) and config.total_steps == 10_000
    assert config.eval_episodes == 2
    assert experiment.ExperimentConfig().resolved() == \
        experiment.ExperimentConfig()


def test_an_environments_preset_fills_the_agent_fields_left_at_their_defaults(tmp_path):
    preset = experiment.PRESETS["Acrobot-v1"]
    agent = experiment.ExperimentConfig(env="Acrobot-v1").resolved().agent
    assert {name: getattr(agent, name) for name in preset} == preset
    assert dataclasses.replace(agent, **{name: getattr(experiment.ReinforceConfig(), name)
                                         for name in preset}) == experiment.ReinforceConfig()
    mine = experiment.ReinforceConfig(entropy_coef=0.05)  # the user's value stands
    agent = experiment.ExperimentConfig(env="Acrobot-v1", agent=mine).resolved().agent
    assert agent == dataclasses.replace(mine, **{name: value for name, value in preset.items()
                                                 if name != "entropy_coef"})
    plain = experiment.ExperimentConfig(env="Acrobot-v1", preset=False)
    assert plain.resolved().agent == experiment.ReinforceConfig()
    # What ran is what config.json says, and a resume resolves to the same config.
    out = tmp_path / "out"
    experiment.main(["--env", "Acrobot-v1", "--seeds", "0", "--total-steps", "1000",
                     "--eval-episodes", "1", "--no-progress", "--out", str(out)])
    saved = json.loads((out / "config.json").read_text())["config"]["agent"]
    assert {name: saved[name] for name in preset} == preset
    assert experiment.ExperimentConfig(env="Acrobot-v1").resolved().resolved() == \
        experiment.ExperimentConfig(env="Acrobot-v1").resolved()


def test_writes_every_update_to_tensorboard(tmp_path, tensorboard_holds):
    experiment.main(QUICK + ["--out", str(tmp_path)])
    tensorboard_holds(tmp_path / "tensorboard", tmp_path / "metrics.csv", ("seed",),
                      "env_steps", ("mean_return", "loss", "grad_norm", "entropy",
                                    "running_mean_return", "skipped_updates"))
