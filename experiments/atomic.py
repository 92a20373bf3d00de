"""Atomic writes: a crash or Ctrl-C leaves either the old file (or folder) or the new one,
never half of one.

A file goes to a temporary file in the destination's folder (same file system), is flushed to
disk, then renamed over the destination with ``os.replace``, which is atomic on POSIX and
Windows. A folder (``atomic_directory``) is written under a temporary name beside its
destination and swapped into place with two renames; a crash between them is repaired by the
next ``atomic_directory`` or ``recover_directory`` on the same path.

Temporaries are named ``.<name>.<random>.tmp<suffix>`` (files) and ``.<name>.<random>.tmpdir``
(folders). A process killed outright (SIGKILL, power loss) cannot clean up after itself:
``remove_temporaries`` deletes such leftovers.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from pathlib import Path

# What atomic_path and atomic_directory name their temporaries: .<name>.<8 random>.tmp...
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(dir|\..*)?$")


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of this module's temporaries."""
    return bool(_TEMPORARY.match(name))


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path to write to; on success it replaces ``path``, on error it is
    removed and ``path`` is untouched. For writers that want a file name (``model.save``,
    ``fig.savefig``); the temporary name keeps ``path``'s suffix so format detection works."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    # mkstemp creates the file owner-only (0600); give it the permissions open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write(path, data: str | bytes) -> Path:
    """Writes ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _displaced(path: Path) -> Path:
    """Where ``replace_directory`` parks the folder it replaces, for the moment between its
    two renames."""
    return path.with_name(f".{path.name}.replaced")


def recover_directory(path) -> None:
    """Repairs a folder swap that a crash interrupted between its two renames: puts the old
    folder back if the new one never arrived, else removes the old one."""
    path = Path(path)
    displaced = _displaced(path)
    if displaced.exists():
        if path.exists():
            shutil.rmtree(displaced)
        else:
            os.replace(displaced, path)


def replace_directory(source, destination) -> Path:
    """Moves the folder ``source`` to ``destination``, replacing any folder there.

    Two renames (``destination`` aside, ``source`` into place) and then the old folder is
    deleted; at every moment either the old or the new folder is complete on disk, and
    ``recover_directory`` undoes a crash between the renames.
    """
    source, destination = Path(source), Path(destination)
    recover_directory(destination)
    if destination.is_symlink() or (destination.exists() and not destination.is_dir()):
        # Moving it aside and deleting the tree would fail half-way (rmtree refuses links
        # and files) or delete what a link points into: refuse before touching anything.
        raise ValueError(f"destination must be a folder (or not exist yet), not a file or a "
                         f"symbolic link: it is replaced as a whole. Received: "
                         f"destination={str(destination)!r}")
    displaced = _displaced(destination)
    if destination.exists():
        os.replace(destination, displaced)
    os.replace(source, destination)
    if displaced.exists():
        shutil.rmtree(displaced)
    return destination


@contextlib.contextmanager
def atomic_directory(path):
    """Yields an empty temporary folder to fill; on success it replaces the folder ``path``
    (``replace_directory``), on error it is deleted and ``path`` is untouched. Temporary
    folders that a killed earlier write of ``path`` left behind are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    own = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmpdir$")
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmpdir"):
        if own.match(stale.name):  # left by an earlier writer of path that was killed
            shutil.rmtree(stale)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmpdir", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only
    try:
        yield tmp
        replace_directory(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def remove_temporaries(folder) -> list[Path]:
    """Deletes what killed atomic writes left under ``folder`` (recursively), and repairs
    interrupted folder swaps; returns the paths removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for parked in sorted(folder.rglob(".*.replaced"), reverse=True):
        recover_directory(parked.with_name(parked.name[1:-len(".replaced")]))
    for path in sorted(folder.rglob(".*"), reverse=True):  # children before their parents
        if is_temporary(path.name) and path.exists():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed
