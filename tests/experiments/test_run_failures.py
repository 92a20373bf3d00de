"""What every experiment does when a run cannot start or cannot go on: a one-line error, the
user's files and the last finished run intact, and the partial run kept for --resume."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import curvature, policy_attacks, records, reinforce
from experiments.run_folder import partial_path

QUICK = {
    reinforce: ["--seeds", "0", "--total-steps", "1000", "--eval-episodes", "1",
                "--no-progress"],
    policy_attacks: ["--seeds", "0", "--kinds", "standard", "--total-steps", "500",
                     "--eval-episodes", "1", "--eps-values", "0", "0.5",
                     "--adversary-steps", "0", "--no-progress"],
    curvature: ["--quick", "--learning-rates", "0.01", "--seeds", "0"],
}
EXPERIMENTS = pytest.mark.parametrize("experiment", list(QUICK),
                                      ids=lambda m: m.__name__.rsplit(".", 1)[1])


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}


def _one_line_error(exit_info) -> str:
    message = exit_info.value.code
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message
    return message


@pytest.fixture
def finished(tmp_path):
    """``finished(experiment) -> out``: a finished quick run of ``experiment``."""
    def run(experiment):
        out = tmp_path / "out"
        experiment.main(QUICK[experiment] + ["--out", str(out)])
        return out
    return run


@EXPERIMENTS
def test_a_full_disk_mid_run_ends_with_one_line_and_keeps_everything(experiment, finished,
                                                                     monkeypatch):
    out = finished(experiment)
    before = _snapshot(out)
    original = records.atomic_write

    def full_disk(path, data):
        if path.name == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, data)

    monkeypatch.setattr(records, "atomic_write", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(QUICK[experiment] + ["--out", str(out)])
    message = _one_line_error(exit_info)
    assert "No space left on device" in message and str(partial_path(out)) in message
    assert _snapshot(out) == before
    assert (partial_path(out) / "config.json").is_file()


@EXPERIMENTS
def test_a_folder_it_may_not_write_is_one_line_and_writes_nothing(experiment, tmp_path,
                                                                  monkeypatch):
    # As root (CI) a read-only folder is still writable, so the refusal is simulated.
    import pathlib

    original = pathlib.Path.mkdir
    out = tmp_path / "locked" / "out"

    def denied(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "locked")):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", denied)
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(QUICK[experiment] + ["--out", str(out)])
    assert "Permission denied" in _one_line_error(exit_info)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("experiment, progress", [
    (reinforce, "progress/progress.json"), (policy_attacks, "progress/progress.json")],
    ids=["reinforce", "policy_attacks"])
def test_a_truncated_progress_file_is_one_line_naming_it(experiment, progress, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with pytest.MonkeyPatch.context() as patch:
            def interrupted(*args, **kwargs):
                raise KeyboardInterrupt
            # After the first progress file is written: reinforce's first checkpoint,
            # policy_attacks' first agent.
            if experiment is reinforce:
                patch.setattr(reinforce, "summarize", interrupted)
            else:
                patch.setattr(policy_attacks, "evaluate_agent", interrupted)
            experiment.main(QUICK[experiment] + ["--out", str(out)])
    path = partial_path(out) / progress
    path.write_text(path.read_text()[:20])
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(QUICK[experiment] + ["--out", str(out), "--resume"])
    assert f"{path} is damaged" in _one_line_error(exit_info)


def test_a_users_folder_is_refused_before_any_work(tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "analysis.py").write_text("print('mine')")
    before = _snapshot(mine)
    with pytest.raises(SystemExit) as exit_info:
        reinforce.main(QUICK[reinforce] + ["--out", str(mine)])
    assert "not a finished run of this package" in _one_line_error(exit_info)
    assert _snapshot(mine) == before and sorted(p.name for p in tmp_path.iterdir()) == \
        ["project"]


def test_a_second_process_on_the_same_out_stops_at_once_naming_the_first(tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-m", "experiments.reinforce", "--seeds", "0", "--total-steps",
         "10000000", "--no-progress", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = partial_path(out) / ".lock"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if lock.exists() and lock.read_text().strip():
                break
            time.sleep(0.05)
        assert lock.read_text().strip() == str(first.pid)
        for flags in ([], ["--resume"]):
            with pytest.raises(SystemExit) as exit_info:
                reinforce.main(QUICK[reinforce] + ["--out", str(out)] + flags)
            assert f"another process (PID {first.pid})" in _one_line_error(exit_info)
        assert first.poll() is None  # still running, its folder intact
        assert json.loads((partial_path(out) / "run.json").read_text())["experiment"] == \
            "reinforce"
    finally:
        first.kill()
        first.wait()


def test_an_environment_that_cannot_be_attacked_is_refused_before_training(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        policy_attacks.main(QUICK[policy_attacks] + ["--env", "FrozenLake-v1", "--out", str(out)])
    message = _one_line_error(exit_info)
    assert "floating-point Box" in message and "FrozenLake-v1" in message
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with pytest.MonkeyPatch.context() as patch:
            calls = []
            original = reinforce.Reinforce.collect

            def interrupted(self):  # Ctrl-C in the third batch: the agent is saved after it
                calls.append(1)
                if len(calls) == 3:
                    os.kill(os.getpid(), signal.SIGINT)
                return original(self)

            patch.setattr(reinforce.Reinforce, "collect", interrupted)
            reinforce.main(QUICK[reinforce] + ["--out", str(out)])
    agent = partial_path(out) / "progress" / "agent" / "agent.json"
    agent.write_text(agent.read_text()[:30])
    with pytest.raises(SystemExit) as exit_info:
        reinforce.main(QUICK[reinforce] + ["--out", str(out), "--resume"])
    assert "is damaged" in _one_line_error(exit_info)
