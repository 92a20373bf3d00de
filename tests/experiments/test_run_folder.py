"""The run folder (experiments.run_folder) and the open handshake of workers in step
(experiments.skeleton)."""

import dataclasses
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments import run_folder
from experiments.run_folder import (
    PartialRunError,
    errors_before_start,
    open_run,
    partial_path,
)


@dataclasses.dataclass(frozen=True)
class Config:
    lr: float = 0.1
    resume: bool = False
    progress: bool = True


def start(out, config=Config(), record=None, *, experiment="demo", resume=False, **kwargs):
    return open_run(out, config, record, experiment=experiment, resume=resume, **kwargs)


def finished_run(out, files=("summary.json",), experiment="demo"):
    """A finished run of ``experiment`` in ``out`` holding ``files`` (text 'old run')."""
    run = start(out, experiment=experiment)
    for name in files:
        (run.path / name).write_text("old run")
    return run.finish()


def test_a_run_is_written_aside_and_replaces_the_old_one_only_when_finished(tmp_path):
    out = finished_run(tmp_path / "results", ("summary.json", "old-only.png"))
    run = start(out, record={"data_source": "sample"})
    assert run.path == partial_path(out) == tmp_path / "results.partial" and not run.resumed
    saved = json.loads((run.path / "config.json").read_text())
    assert saved["config"] == {"lr": 0.1, "resume": False, "progress": True}
    assert saved["data_source"] == "sample" and saved["versions"]["tensorflow"]
    # Which machine: results differ across CPUs in their float32 digits.
    assert saved["machine"]["cores"] == os.cpu_count() and saved["machine"]["cpu"]
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        assert f": {saved['machine']['cpu']}\n" in cpuinfo.read_text()
    (run.path / "summary.json").write_text("new run")
    assert (out / "summary.json").read_text() == "old run"  # untouched while running
    run.finish()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "run.json", "summary.json"]
    assert (out / "summary.json").read_text() == "new run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    marker = json.loads((out / "run.json").read_text())
    assert marker["package"] == "gradlab" and marker["experiment"] == "demo"
    assert marker["finished"] is True and marker["files"] == ["config.json", "summary.json"]


def test_leftovers_a_resume_needed_are_deleted_after_the_swap_and_not_listed(tmp_path):
    run = start(tmp_path / "out")
    (run.path / "checkpoint").mkdir()
    (run.path / "checkpoint" / "agent.npz").write_text("weights")
    (run.path / "progress.json").write_text("{}")
    (run.path / "summary.json").write_text("{}")
    out = run.finish(leftovers=("checkpoint", "progress.json"))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "run.json", "summary.json"]
    assert json.loads((out / "run.json").read_text())["files"] == ["config.json",
                                                                  "summary.json"]


def test_progress_and_learners_are_saved_together_and_read_back_on_resume(tmp_path):
    out = tmp_path / "results"
    run = start(out, resumable=True)
    assert run.progress({"rows": []}) == {"rows": []} and run.saved_learner("agent") is None
    run.save_progress({"rows": [1]}, {"agent": lambda p: (p.mkdir(), (p / "w").write_text("1"))})

    def crash(folder):
        (folder.mkdir(), (folder / "w").write_text("half"))
        raise OSError("disk full")

    with pytest.raises(OSError):  # a save that fails half-way leaves the last one whole
        run.save_progress({"rows": [1, 2]}, {"agent": crash})
    run.close()
    run = start(out, resume=True, resumable=True)
    assert run.progress({}) == {"rows": [1]}
    assert (run.saved_learner("agent") / "w").read_text() == "1"
    (run.path / "summary.json").write_text("{}")
    out = run.finish()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "run.json", "summary.json"]


def test_a_partial_run_is_resumed_only_when_asked_and_with_the_same_config(tmp_path):
    out = tmp_path / "results"
    run = start(out)
    run_id = json.loads((run.path / "run.json").read_text())["run_id"]
    (run.path / "metrics.csv").write_text("epoch\n1\n")
    run.close()
    with pytest.raises(PartialRunError, match="no process is running. Pass --resume"):
        start(out)
    with pytest.raises(PartialRunError, match="another config"):
        start(out, Config(lr=0.2), resume=True)
    again = start(out, Config(resume=True, progress=False), resume=True)
    assert again.resumed and (again.path / "metrics.csv").read_text() == "epoch\n1\n"
    assert json.loads((again.path / "config.json").read_text())["config"]["resume"] is True
    assert json.loads((again.path / "run.json").read_text())["run_id"] == run_id


def test_resuming_removes_what_a_killed_write_left_behind(tmp_path):
    out = tmp_path / "results"
    run = start(out)
    (run.path / "models").mkdir()
    (run.path / "models" / ".clean.keras.k2j4h5g6.tmp.keras").write_text("half a model")
    (run.path / ".checkpoint.a1b2c3d4.tmpdir").mkdir()
    (run.path / "keep.txt").write_text("a finished file")
    run.close()
    path = start(out, resume=True).path
    left = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    assert left == [".lock", "config.json", "keep.txt", "models", "run.json"]


def test_an_experiment_without_checkpoints_replaces_a_stale_partial_run(tmp_path):
    out = tmp_path / "results"
    run = start(out)
    (run.path / "stale.csv").write_text("from a killed run")
    run.close()
    run = start(out, resumable=False)
    assert not (run.path / "stale.csv").exists()


def test_an_out_folder_that_is_not_a_run_is_never_replaced(tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("a user's file")
    (mine / "config.json").write_text("{}")  # a file of the same name is not a run
    with pytest.raises(PartialRunError, match="not a finished run of this package"):
        start(mine)
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(PartialRunError, match="not a file or a symbolic link"):
        start(tmp_path / "notes.txt")
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(PartialRunError, match="not a file or a symbolic link"):
        start(tmp_path / "link")
    assert (mine / "thesis.tex").read_text() == "a user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "notes.txt", "thesis"]


def test_a_users_file_in_a_results_folder_is_never_deleted(tmp_path):
    out = finished_run(tmp_path / "results")
    (out / "my_notes.txt").write_text("a user's notes")
    with pytest.raises(PartialRunError, match=r"did not write \(my_notes.txt\)"):
        start(out)
    assert not partial_path(out).exists()  # a failed start writes nothing
    (out / "my_notes.txt").unlink()
    run = start(out)
    (out / "plots").mkdir()
    (out / "plots" / "mine.png").write_text("added while the run ran")
    with pytest.raises(PartialRunError, match="plots/mine.png"):
        run.finish()
    assert (out / "plots" / "mine.png").read_text() == "added while the run ran"
    assert (out / "summary.json").read_text() == "old run" and run.path.is_dir()


def test_a_run_never_replaces_another_experiments_folder(tmp_path):
    out = finished_run(tmp_path / "results", experiment="reinforce")
    with pytest.raises(PartialRunError, match="a run of experiment 'reinforce'"):
        start(out, experiment="fgsm_mnist")
    assert (out / "summary.json").read_text() == "old run"


def test_a_partial_folder_that_is_not_a_run_is_refused(tmp_path):
    out = tmp_path / "results"
    partial_path(out).mkdir()
    (partial_path(out) / "data.csv").write_text("a user's data")
    for resume in (False, True):
        with pytest.raises(PartialRunError, match="not a partial run of this package"):
            start(out, resume=resume, resumable=resume)
    assert (partial_path(out) / "data.csv").read_text() == "a user's data"


def test_two_runs_never_share_a_folder(tmp_path):
    out = tmp_path / "results"
    first = start(out)
    for kwargs in ({}, {"resume": True}, {"resumable": False}):
        with pytest.raises(PartialRunError, match=r"another process \(PID \d+\) is writing"):
            start(out, **kwargs)
    assert (first.path / "config.json").is_file()  # the non-resumable start emptied nothing
    first.close()
    assert start(out, resume=True).resumed


def test_a_run_locked_by_another_process_is_refused_with_its_pid(tmp_path):
    out = tmp_path / "results"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import dataclasses, sys
        from experiments.run_folder import open_run

        @dataclasses.dataclass(frozen=True)
        class Config:
            lr: float = 0.1
            resume: bool = False
            progress: bool = True

        run = open_run({str(out)!r}, Config(), experiment="demo", resume=False)
        print("locked", flush=True)
        sys.stdin.read()  # until the test closes our input
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PartialRunError, match=rf"another process \(PID {holder.pid}\)"):
            start(out, resume=True)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert start(out, resume=True).resumed  # the lock ends with its process


def test_a_run_whose_partial_folder_was_deleted_stops_and_recreates_nothing(tmp_path):
    import shutil

    out = finished_run(tmp_path / "results")
    run = start(out)
    shutil.rmtree(run.path)
    with pytest.raises(PartialRunError, match="was deleted or replaced"):
        run.path / "metrics.csv"
    with pytest.raises(PartialRunError, match="was deleted or replaced"):
        run.finish()
    assert not partial_path(out).exists()
    assert (out / "summary.json").read_text() == "old run"
    # A new run made in its place is not written into by the old one.
    other = start(out)
    with pytest.raises(PartialRunError, match="was deleted or replaced"):
        run.read_json("progress.json", None)
    assert other.path.is_dir()


def test_a_damaged_progress_file_is_named(tmp_path):
    run = start(tmp_path / "results")
    assert run.read_json("progress.json", {"rows": []}) == {"rows": []}
    (run.path / "progress.json").write_text('{"rows": [1, 2')  # truncated
    with pytest.raises(PartialRunError, match=r"progress.json is damaged"):
        run.read_json("progress.json", None)


def test_a_failed_write_ends_the_run_with_one_line_and_keeps_it(tmp_path):
    out = finished_run(tmp_path / "results")
    run = start(out)
    with pytest.raises(SystemExit) as error:
        with run:
            raise OSError(errno.ENOSPC, "No space left on device", str(run.path / "x.csv"))
    message = str(error.value.code)
    assert message.startswith("error: [Errno 28] No space left on device")
    assert "--resume" in message and str(partial_path(out)) in message
    assert "Traceback" not in message and "\n" not in message
    assert (out / "summary.json").read_text() == "old run" and partial_path(out).is_dir()
    assert start(out, resume=True).resumed  # the lock was released


def test_ctrl_c_says_where_the_run_is_and_how_to_go_on(tmp_path, capsys):
    run = start(tmp_path / "results")
    with pytest.raises(KeyboardInterrupt):
        with run:
            raise KeyboardInterrupt
    assert "add --resume to the same command" in capsys.readouterr().out
    run = start(tmp_path / "other", resumable=False)
    with pytest.raises(KeyboardInterrupt):
        with run:
            raise KeyboardInterrupt
    assert "cannot resume: the same command starts it over" in capsys.readouterr().out


def test_a_failed_start_writes_nothing(tmp_path, monkeypatch):
    def full_disk(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(run_folder, "write_json", full_disk)
    with pytest.raises(SystemExit, match=r"^error: \[Errno 28\]"):
        with errors_before_start():
            start(tmp_path / "results")
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_run_must_see_the_same_data(tmp_path):
    out = tmp_path / "results"
    start(out, record={"data_source": "tfds", "train_examples": 60000}).close()
    with pytest.raises(PartialRunError, match="another config or data"):
        start(out, record={"data_source": "sample", "train_examples": 8000}, resume=True)
    assert start(out, record={"data_source": "tfds", "train_examples": 60000},
                 resume=True).resumed


def test_the_event_log_never_recreates_a_deleted_partial_folder(tmp_path):
    import shutil

    run = start(tmp_path / "results")
    log = run.tensorboard(("seed",), "step")
    log.add({"seed": 0, "step": 1, "loss": 0.5})
    shutil.rmtree(run.path)
    with pytest.raises(PartialRunError, match="was deleted or replaced"):
        log.add({"seed": 1, "step": 1, "loss": 0.4})  # a new run's event file
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_an_interruption_right_after_the_swap_leaves_a_folder_the_next_run_accepts(
        tmp_path, monkeypatch, capsys):
    run = start(tmp_path / "results")
    (run.path / "checkpoint").mkdir()
    (run.path / "checkpoint" / "agent.npz").write_text("weights")
    (run.path / "summary.json").write_text("{}")

    def interrupted(path, *args, **kwargs):  # Ctrl-C while the leftovers are deleted
        raise KeyboardInterrupt

    monkeypatch.setattr(run_folder.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with run:
            run.finish(leftovers=("checkpoint",))
    monkeypatch.undo()
    out = tmp_path / "results"
    assert f"the finished run is in {out}" in capsys.readouterr().out
    assert (out / "checkpoint" / "agent.npz").exists()
    again = start(out)  # the leftovers are the run's own, not a user's
    again.finish()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "run.json"]


def test_a_failed_start_removes_the_folders_it_made(tmp_path, monkeypatch):
    def full_disk(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(run_folder, "write_json", full_disk)
    with pytest.raises(OSError):
        start(tmp_path / "a" / "b" / "results")
    assert list(tmp_path.iterdir()) == []


def _finish_blocked_by_a_users_file(tmp_path):
    """A finished run of ``out`` and a new run whose finish a user's file will block."""
    out = finished_run(tmp_path / "results")
    run = start(out)
    (run.path / "summary.json").write_text("a finished result")
    (out / "mine.txt").write_text("a user's file")
    return out, run


def test_a_finished_run_that_could_not_be_moved_is_never_emptied(tmp_path):
    out, run = _finish_blocked_by_a_users_file(tmp_path)
    with pytest.raises(PartialRunError, match="The finished run is kept in"):
        run.finish()
    run.close()
    (out / "mine.txt").unlink()
    with pytest.raises(PartialRunError, match="holds a finished run that was not moved"):
        start(out, resumable=False)
    assert (partial_path(out) / "summary.json").read_text() == "a finished result"


def test_a_partial_folder_holding_only_a_starting_runs_temporaries_is_not_foreign(tmp_path):
    out = tmp_path / "results"
    partial_path(out).mkdir()
    (partial_path(out) / ".run.json.a1b2c3d4.tmp.json").write_text("{")  # killed mid-write
    assert not start(out).resumed


def test_a_users_file_where_leftovers_were_is_still_refused(tmp_path):
    run = start(tmp_path / "results")
    (run.path / "checkpoint").mkdir()
    (run.path / "checkpoint" / "agent.npz").write_text("weights")
    out = run.finish(leftovers=("checkpoint",))
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "notes.txt").write_text("a user's file")
    with pytest.raises(PartialRunError, match="checkpoint/notes.txt"):
        start(out)


def test_a_resumable_run_that_could_not_be_moved_is_finished_by_resume(tmp_path):
    out, run = _finish_blocked_by_a_users_file(tmp_path)
    with pytest.raises(SystemExit, match="add --resume"):
        with run:
            run.finish()
    (out / "mine.txt").unlink()
    start(out, resume=True).finish()
    assert (out / "summary.json").read_text() == "a finished result"


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    out: str = "out"
    resume: bool = False

    def resolved(self):
        return self


def _as_worker(chief, sums, argv, start=None, seen=None):
    """Runs a demo experiment as one process of a job in step whose barriers return ``sums``
    in turn; returns (and puts into ``seen``) the values it passed to them and what its
    ``run`` saw."""
    from experiments.skeleton import run_experiment

    calls, seen, sums = [], {} if seen is None else seen, iter(sums)

    def barrier(value):
        calls.append(value)
        return next(sums)

    def run(config, folder, started):
        seen.update(resumed=folder.resumed, progress=folder.progress({}), path=folder.path)
        return {}

    try:
        run_experiment(WorkerConfig, argv, name="demo", run=run, start=start, resumable=True,
                       workers=lambda config: (chief, barrier))
    finally:
        seen["calls"] = calls
    return seen


def test_a_worker_resumes_from_a_copy_of_the_chiefs_partial_run_and_writes_no_out(tmp_path):
    out = tmp_path / "out"
    chiefs = open_run(out, WorkerConfig(out=str(out)), experiment="demo", resume=False)
    chiefs.save_progress({"epoch": 3})
    chiefs.close()
    seen = _as_worker(False, [1.0, 0.0], ["--out", str(out), "--resume"])
    assert seen["calls"] == [0.0, 0.0] and seen["resumed"] and seen["progress"] == {"epoch": 3}
    assert tmp_path not in seen["path"].parents  # a scratch folder, deleted at the end
    assert not seen["path"].exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "out.partial"]  # the chief's, untouched


def test_a_worker_stops_when_the_chief_could_not_open_its_run(tmp_path):
    with pytest.raises(SystemExit, match="the chief could not open its run"):
        _as_worker(False, [-1.0], ["--out", str(tmp_path / "out")])
    assert list(tmp_path.iterdir()) == []


def test_a_worker_that_cannot_start_tells_the_others_at_the_second_barrier(tmp_path):
    def bad_data(config):
        raise ValueError("no MNIST here")

    for chief_says, flags, start, message in (
            (0.0, [], bad_data, "no MNIST here"),
            (1.0, ["--resume"], None, "cannot read: with --resume, --out must be on")):
        seen = {}
        with pytest.raises(SystemExit, match=message):
            _as_worker(False, [chief_says, -1.0], ["--out", str(tmp_path / "out"), *flags],
                       start=start, seen=seen)
        assert seen["calls"] == [0.0, -1.0]  # the others hear of it, and stop too


def test_the_chief_stops_when_another_worker_could_not_open_its_run(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="another worker could not open its run"):
        _as_worker(True, [0.0, -1.0], ["--out", str(out)])
    assert (partial_path(out) / "config.json").is_file() and not out.exists()
    seen = _as_worker(True, [1.0, 0.0], ["--out", str(out), "--resume"])
    assert seen["calls"] == [1.0, 0.0] and seen["resumed"] and out.is_dir()
