"""The main job (``python -m experiments``): order, --quick, --resume and its cost record."""

import json
import types

import pytest

import experiments.__main__ as main_job


@pytest.fixture
def fake_experiments(monkeypatch, tmp_path):
    """Every experiment replaced by a stub that records the flags it was given."""
    calls = []

    def fake_import(name):
        return types.SimpleNamespace(main=lambda flags: calls.append((name, flags)))

    monkeypatch.setattr(main_job.importlib, "import_module", fake_import)
    monkeypatch.setattr(main_job, "TIMES", tmp_path / "results" / "main_job.json")
    monkeypatch.setattr(main_job, "QUICK_OUT", tmp_path / "results-quick")
    return calls


def test_runs_every_experiment_in_order_and_records_the_costs(fake_experiments):
    seconds = main_job.main([])
    assert [name for name, _ in fake_experiments] == [
        f"experiments.{name}" for name in main_job.EXPERIMENTS]
    assert all(flags == main_job.EXPERIMENTS[name.split(".")[1]]
               for name, flags in fake_experiments)
    record = json.loads(main_job.TIMES.read_text())
    assert list(record["minutes"]) == list(main_job.EXPERIMENTS)
    assert record["total_minutes"] == pytest.approx(sum(seconds.values()) / 60)
    assert record["resumed"] is False


def test_only_keeps_the_main_jobs_order_and_records_nothing(fake_experiments):
    main_job.main(["--only", "policy_attacks", "curvature"])
    assert [name for name, _ in fake_experiments] == ["experiments.curvature",
                                                      "experiments.policy_attacks"]
    assert not main_job.TIMES.exists()  # a partial job is not the README's cost table


def test_quick_writes_elsewhere_and_records_nothing(fake_experiments):
    main_job.main(["--quick"])
    for name, flags in fake_experiments:
        short = name.split(".")[1]
        assert "--quick" in flags
        assert flags[flags.index("--out") + 1] == str(main_job.QUICK_OUT / short)
    assert not main_job.TIMES.exists()


def test_resume_goes_to_the_resumable_experiments_only(fake_experiments):
    main_job.main(["--resume"])
    for name, flags in fake_experiments:
        assert ("--resume" in flags) == (name.split(".")[1] in main_job.RESUMABLE)


def test_records_the_share_of_time_spent_writing_tensorboard(fake_experiments, monkeypatch):
    from experiments.records import TensorBoardLog

    def fake_import(name):
        def main(flags):
            TensorBoardLog.spent += 0.5  # as if its logs wrote for half a second
        return types.SimpleNamespace(main=main)

    clock = iter(range(0, 1000, 10))  # every experiment takes 10 s by this clock
    monkeypatch.setattr(main_job.importlib, "import_module", fake_import)
    monkeypatch.setattr(main_job.time, "perf_counter", lambda: next(clock))
    main_job.main([])
    record = json.loads(main_job.TIMES.read_text())
    assert record["tensorboard_fraction"] == {name: pytest.approx(0.05)
                                              for name in main_job.EXPERIMENTS}
    assert record["minutes"] == {name: pytest.approx(10 / 60) for name in main_job.EXPERIMENTS}
