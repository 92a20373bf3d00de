import dataclasses
import json

import pytest

from experiments.run_folder import PartialRunError, open_run, partial_path


@dataclasses.dataclass(frozen=True)
class Config:
    lr: float = 0.1
    resume: bool = False
    progress: bool = True


def test_a_run_is_written_aside_and_replaces_the_old_one_only_when_finished(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "summary.json").write_text("old run")
    (out / "old-only.png").write_text("old plot")
    run = open_run(out, Config(), {"data_source": "sample"}, resume=False)
    assert run.path == partial_path(out) == tmp_path / "results.partial" and not run.resumed
    saved = json.loads((run.path / "config.json").read_text())
    assert saved["config"] == {"lr": 0.1, "resume": False, "progress": True}
    assert saved["data_source"] == "sample" and saved["versions"]["tensorflow"]
    (run.path / "summary.json").write_text("new run")
    assert (out / "summary.json").read_text() == "old run"  # untouched while running
    run.finish()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "summary.json"]
    assert (out / "summary.json").read_text() == "new run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_a_partial_run_is_resumed_only_when_asked_and_with_the_same_config(tmp_path):
    out = tmp_path / "results"
    run = open_run(out, Config(), resume=False)
    (run.path / "metrics.csv").write_text("epoch\n1\n")
    with pytest.raises(PartialRunError, match="Pass --resume to continue it"):
        open_run(out, Config(), resume=False)
    with pytest.raises(PartialRunError, match="another config"):
        open_run(out, Config(lr=0.2), resume=True)
    again = open_run(out, Config(resume=True, progress=False), resume=True)
    assert again.resumed and (again.path / "metrics.csv").read_text() == "epoch\n1\n"
    assert json.loads((again.path / "config.json").read_text())["config"]["resume"] is True


def test_resuming_removes_what_a_killed_write_left_behind(tmp_path):
    out = tmp_path / "results"
    run = open_run(out, Config(), resume=False)
    (run.path / "models").mkdir()
    (run.path / "models" / ".clean.keras.k2j4h5g6.tmp.keras").write_text("half a model")
    (run.path / ".checkpoint.a1b2c3d4.tmpdir").mkdir()
    (run.path / "keep.txt").write_text("a finished file")
    open_run(out, Config(), resume=True)
    left = sorted(str(p.relative_to(run.path)) for p in run.path.rglob("*"))
    assert left == ["config.json", "keep.txt", "models"]


def test_an_experiment_without_checkpoints_replaces_a_stale_partial_run(tmp_path):
    out = tmp_path / "results"
    run = open_run(out, Config(), resume=False)
    (run.path / "stale.csv").write_text("from a killed run")
    run = open_run(out, Config(), resume=False, resumable=False)
    assert not (run.path / "stale.csv").exists()


def test_an_out_folder_that_is_not_a_run_is_never_replaced(tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "thesis.tex").write_text("a user's file")
    with pytest.raises(PartialRunError, match="not an earlier run of an experiment"):
        open_run(mine, Config(), resume=False)
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(PartialRunError, match="not a file or a symbolic link"):
        open_run(tmp_path / "notes.txt", Config(), resume=False)
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(PartialRunError, match="not a file or a symbolic link"):
        open_run(tmp_path / "link", Config(), resume=False)
    assert (mine / "thesis.tex").read_text() == "a user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "notes.txt", "thesis"]


def test_a_resumed_run_must_see_the_same_data(tmp_path):
    out = tmp_path / "results"
    open_run(out, Config(), {"data_source": "tfds", "train_examples": 60000}, resume=False)
    with pytest.raises(PartialRunError, match="another config or data"):
        open_run(out, Config(), {"data_source": "sample", "train_examples": 8000}, resume=True)
    assert open_run(out, Config(), {"data_source": "tfds", "train_examples": 60000},
                    resume=True).resumed
