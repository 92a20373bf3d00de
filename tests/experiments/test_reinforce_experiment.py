import csv
import json

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


def test_interrupt_keeps_the_agent_and_the_metrics(tmp_path, monkeypatch):
    calls = []
    original = Reinforce.update

    def interrupted_update(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Reinforce, "update", interrupted_update)
    with pytest.raises(KeyboardInterrupt):
        experiment.main(QUICK + ["--out", str(tmp_path)])
    assert (tmp_path / "agents" / "seed_0" / "agent.json").exists()
    with open(tmp_path / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 2


def test_bad_flags_are_usage_errors(capsys):
    with pytest.raises(SystemExit):
        experiment.main(["--gamma", "1.5"])
    assert "gamma must be in (0.0, 1.0]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        experiment.main(["--total-steps", "0"])
    assert "total_steps must be an integer >= 1" in capsys.readouterr().err
