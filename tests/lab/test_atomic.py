import pytest

from lab.atomic import atomic_path, atomic_write


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    atomic_write(path, "first")
    atomic_write(path, b"second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

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
