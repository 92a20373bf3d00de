import os

import pytest

from experiments.atomic import (
    atomic_directory,
    atomic_path,
    atomic_write,
    recover_directory,
    remove_temporaries,
)


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    atomic_write(path, "first")
    atomic_write(path, b"second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "metrics.csv", "a,b\n")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_crash_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("trained weights")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            assert tmp.suffix == ".keras" and tmp.parent == tmp_path
            tmp.write_text("half a")
            raise KeyboardInterrupt
    assert path.read_text() == "trained weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_remove_temporaries_finds_what_a_killed_write_leaves(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "sub" / "model.keras") as tmp:
            name = tmp.name
            raise KeyboardInterrupt
    # A process killed outright (SIGKILL) never reaches the cleanup: the file stays.
    (tmp_path / "sub" / name).write_text("half a model")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(tmp_path / "checkpoint") as tmp_dir:
            dir_name = tmp_dir.name
            raise KeyboardInterrupt
    (tmp_path / dir_name).mkdir()
    (tmp_path / dir_name / "arrays.npz").write_text("half a checkpoint")
    (tmp_path / "sub" / ".notes.txt").write_text("a user's hidden file, not ours")
    removed = remove_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([name, dir_name])
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "sub", "sub/.notes.txt"]


def test_atomic_directory_replaces_a_folder_whole_or_not_at_all(tmp_path):
    path = tmp_path / "agent"
    with atomic_directory(path) as tmp:
        (tmp / "weights").write_text("first")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(path) as tmp:
            (tmp / "weights").write_text("half of the second")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["agent"]
    assert (path / "weights").read_text() == "first"
    with atomic_directory(path) as tmp:
        (tmp / "other").write_text("second")
    assert [p.name for p in path.iterdir()] == ["other"]


def test_a_swap_killed_between_its_renames_is_repaired(tmp_path):
    path = tmp_path / "agent"
    path.mkdir()
    (path / "weights").write_text("old")
    # Killed after moving the old folder aside, before the new one arrived:
    os.replace(path, tmp_path / ".agent.replaced")
    recover_directory(path)
    assert (path / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["agent"]
    # Killed after the new folder arrived, before the old one was deleted:
    (tmp_path / ".agent.replaced").mkdir()
    remove_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["agent"]


def test_atomic_directory_removes_what_a_killed_earlier_write_of_it_left(tmp_path):
    stale = tmp_path / ".agent.abcd1234.tmpdir"   # as a SIGKILLed save leaves it
    stale.mkdir()
    (stale / "policy.keras").write_text("half")
    other = tmp_path / ".value.abcd1234.tmpdir"   # another folder's: not ours to touch
    other.mkdir()
    sibling = tmp_path / ".agent.v2.abcd1234.tmpdir"   # agent.v2's, being written
    sibling.mkdir()
    with atomic_directory(tmp_path / "agent") as tmp:
        (tmp / "agent.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".agent.v2.abcd1234.tmpdir", ".value.abcd1234.tmpdir", "agent"]


def test_a_file_or_a_link_is_never_replaced_by_a_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("a user's file")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "data").write_text("kept")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for name in ("notes.txt", "link"):
        with pytest.raises(ValueError, match="not a file or a symbolic link"):
            with atomic_directory(tmp_path / name) as tmp:
                (tmp / "agent.json").write_text("{}")
    assert (tmp_path / "notes.txt").read_text() == "a user's file"
    assert (tmp_path / "link" / "data").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "notes.txt", "real"]
