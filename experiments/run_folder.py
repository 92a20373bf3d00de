"""A results folder that always holds one complete run of one process, and nothing of the
user's that a run could delete.

An experiment writes into ``<out>.partial/`` (its config first, then metrics, checkpoints and
models as it goes) and ``finish`` moves that folder over ``<out>`` in one step, replacing the
previous run only once the new one is complete. So:

- a run that crashes or is interrupted leaves ``<out>`` as it was and its own files in
  ``<out>.partial/``, visibly unfinished;
- ``--resume`` continues that partial run from its last checkpoint (the config must be the
  same); without it, a new run refuses to start over a partial one, so nothing trained is
  thrown away by accident;
- a run that fails before it starts (a bad flag, an unknown environment, unreadable data)
  checks those things before ``open_run`` and writes nothing.

What makes a folder a run: ``run.json``, which only this package writes. It names the package,
the experiment and the run, and, once the run is finished, every file the run wrote. A run
replaces ``<out>`` only if ``<out>`` is empty or a finished run of the same experiment holding
no file that run did not write: a user's folder, or a user's file added to a results folder,
is refused with an error before any work, and again just before the swap.

One process per run: the process that opens a partial folder holds an OS lock on its
``.lock`` file (with its PID inside) until the run ends. A second process stops at once with
an error naming that PID. A run whose partial folder was deleted or replaced under it (the
lock file is no longer the one it holds) stops at its next write instead of recreating the
folder (``RunFolder.path`` checks), and never moves anything into ``<out>``.

Leftovers of writes killed outright (temporary files, a half-swapped folder) are removed when
a partial run is resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import uuid
import zipfile
import zlib
from pathlib import Path

from experiments.atomic import (
    atomic_directory,
    is_temporary,
    recover_directory,
    remove_temporaries,
    replace_directory,
)
from experiments.records import TensorBoardLog, jsonable, library_versions, machine, write_json

try:  # POSIX; where there is no fcntl (Windows) runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

PARTIAL_SUFFIX = ".partial"
MARKER = "run.json"   # written by this package only: what makes a folder a run
LOCK = ".lock"        # in the partial folder: locked by the process writing the run
PACKAGE = "gradlab"
PROGRESS = "progress"  # in the partial folder: the one resume store (progress.json, learners)
# Fields that say how to run, not what to compute: a resumed run may change them.
RUN_CONTROL_FIELDS = ("resume", "progress")


class PartialRunError(RuntimeError):
    """A run cannot start or go on: a partial run is in the way of a new one, does not match
    the run to resume, or is another process's; ``--out`` is not a results folder that a
    finished run may replace; or the run's files were changed under it."""


def partial_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in RUN_CONTROL_FIELDS}


def _read_marker(folder: Path) -> dict | None:
    """The folder's ``run.json`` if it is one of this package's, else ``None``."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("package") == PACKAGE else None


def _files(folder: Path) -> list[str]:
    """Every file under ``folder``, as sorted paths relative to it (folders are implied)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() or p.is_symlink())


def _under(name: str, folders) -> bool:
    """Whether the relative path ``name`` is one of ``folders`` or inside one."""
    return any(name == folder or name.startswith(f"{folder}/") for folder in folders)


def _check_replaceable(out: Path, experiment: str) -> None:
    """Raises ``PartialRunError`` unless a finished run of ``experiment`` may replace ``out``:
    it does not exist, is empty, or is such a run holding only the files that run wrote."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise PartialRunError(f"--out must be a results folder (it is replaced as a whole "
                              f"when the run finishes), not a file or a symbolic link. "
                              f"Received: {out}")
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = _read_marker(out)
    if marker is None or not isinstance(marker.get("files"), list):
        raise PartialRunError(
            f"{out} holds files that are not a finished run of this package (no {MARKER}); "
            f"a finished run replaces its --out folder as a whole, so choose a new or empty "
            f"folder (a run written before gradlab recorded {MARKER} is not recognised "
            f"either: move it away).")
    if marker.get("experiment") != experiment:
        raise PartialRunError(
            f"{out} holds a run of experiment {marker.get('experiment')!r}, which a run of "
            f"{experiment!r} would delete; choose another --out.")
    # Leftovers of a resume (checkpoints) that an interruption right after the swap kept.
    leftovers = [str(name) for name in marker.get("leftovers", [])]
    unknown = sorted(name for name in set(_files(out)) - set(marker["files"]) - {MARKER, LOCK}
                     if not _under(name, leftovers))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5
                                          else "")
        raise PartialRunError(
            f"{out} holds files its run did not write ({shown}); a finished run replaces the "
            f"folder as a whole and would delete them: move them out, or choose another "
            f"--out.")


class _Lock:
    """An exclusive OS lock (``flock``) on ``<folder>/.lock``, which holds the owner's PID."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(self.fd, 32).decode(errors="replace").strip() or "starting up"
            self.release()
            raise PartialRunError(
                f"another process (PID {owner}) is writing this run into {folder}; two runs "
                f"never share a folder: wait for it to end, or stop it (Ctrl-C) and add "
                f"--resume to continue its run.") from None
        if not self.held():  # its owner deleted the folder between our open and our lock
            self.release()
            raise PartialRunError(f"another process removed {folder} as this run started; "
                                  f"run the command again.")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def held(self) -> bool:
        """Whether ``.lock`` is still the file this lock holds (the folder was not deleted,
        moved or replaced)."""
        try:
            on_disk = os.stat(self.path)
        except OSError:
            return False
        mine = os.fstat(self.fd)
        return (on_disk.st_ino, on_disk.st_dev) == (mine.st_ino, mine.st_dev)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None


class RunFolder:
    """The partial folder of one run, locked by this process, and where it goes when complete
    (``out``).

    ``resumed`` tells whether the folder already held files of an earlier attempt. Use it as a
    context manager around the run's work: on Ctrl-C it says where the run is and how to go on,
    a failed write (disk full, permission denied) or a damaged checkpoint ends the run with a
    one-line error that says the same, and the lock is released in every case.
    """

    def __init__(self, out: Path, path: Path, resumed: bool, experiment: str, resumable: bool,
                 lock: _Lock, run_id: str):
        self.out, self.resumed, self.experiment = out, resumed, experiment
        self.resumable, self.run_id = resumable, run_id
        self.completed = False  # finish has marked the run finished (it may not be moved yet)
        self._path, self._lock = path, lock

    @property
    def path(self) -> Path:
        """The partial folder to write into (``check``ed first, so nothing recreates it)."""
        return self.check()

    def check(self) -> Path:
        """Returns the partial folder; raises ``PartialRunError`` if it is no longer this run's
        (deleted or replaced by someone else) or the run has ended."""
        if self._lock.fd is None:
            raise PartialRunError(f"{self._path}: this run has ended (finished, failed or "
                                  f"interrupted); nothing more is written into it.")
        if not self._lock.held():
            raise PartialRunError(
                f"{self._path} was deleted or replaced while this run was writing it; this run "
                f"stops without writing more (its results are lost; {self.out} is untouched).")
        return self._path

    def tensorboard(self, run_keys: tuple[str, ...], step_key: str, rows=()) -> TensorBoardLog:
        """The run's ``TensorBoardLog`` in ``tensorboard/``, rewritten from ``rows`` (what a
        resumed run has recorded); it checks the folder before it opens each event file."""
        return TensorBoardLog(lambda: self.path / "tensorboard", run_keys, step_key, rows)

    @contextlib.contextmanager
    def reading(self, what):
        """Around loading a checkpoint, a saved model or agent to resume from: a damaged one
        (the loaders raise ``ValueError``, ``KeyError``, ``EOFError``, zip and zlib errors)
        ends the run with a one-line error naming ``what`` instead of a traceback."""
        try:
            yield
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise PartialRunError(
                f"{what} is damaged ({error}), so this run cannot be resumed from it; delete "
                f"{self._path} to start over.") from None

    def read_json(self, name: str, default):
        """A progress file of the partial run (``default`` if there is none); a damaged one
        (truncated, not JSON) raises ``PartialRunError`` naming it."""
        path = self.path / name
        if not path.exists():
            return default
        with self.reading(path):
            return json.loads(path.read_text())

    def progress(self, default: dict) -> dict:
        """What ``save_progress`` last saved (``default`` for a new run); a damaged record
        raises ``PartialRunError`` naming it."""
        return self.read_json(f"{PROGRESS}/progress.json", default)

    def saved_learner(self, name: str) -> Path | None:
        """The folder a learner was saved into by the last ``save_progress``, or ``None``."""
        path = self.path / PROGRESS / name
        return path if path.is_dir() else None

    def save_progress(self, state: dict, learners: dict | None = None) -> None:
        """The run's one resume store: writes ``state`` (anything JSON holds: metrics rows,
        finished parts' results, counters) and each learner in training
        (``{name: save(folder)}``, e.g. ``{"agent": agent.save}``) into ``progress/``, replacing
        the previous save as a whole, so the state and the learners always agree."""
        with atomic_directory(self.path / PROGRESS) as tmp:
            for name, save in (learners or {}).items():
                save(tmp / name)
            (tmp / "progress.json").write_text(json.dumps(state, default=jsonable) + "\n")

    def finish(self, leftovers=()) -> Path:
        """Moves the complete run into ``out``, replacing the previous one; returns ``out``.

        ``leftovers`` (names in the folder: checkpoints, progress files) are what a resume
        needed, besides ``progress/``: they stay until the swap, so an interruption before it
        can still resume, and are deleted after it; ``run.json`` lists the run's other files.
        """
        leftovers = (PROGRESS, *leftovers)
        path = self.path
        remove_temporaries(path)
        kept = [name for name in _files(path)
                if name not in (MARKER, LOCK) and not _under(name, leftovers)]
        marker = _read_marker(path) or {}
        finished = {**marker, "finished": True, "files": kept, "leftovers": list(leftovers)}
        write_json(path / MARKER, finished)
        self.completed = True
        recover_directory(self.out)
        try:
            _check_replaceable(self.out, self.experiment)  # a user's file added while it ran
        except PartialRunError as error:
            raise PartialRunError(f"{error} The finished run is kept in {path}: move it over "
                                  f"{self.out} yourself once your files are safe.") from None
        self.check()  # still ours, just before the swap
        out = replace_directory(path, self.out)
        for leftover in [out / LOCK] + [out / name for name in leftovers]:
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.exists():
                leftover.unlink()
        # Gone now: a file of the user's under those names later is not the run's.
        write_json(out / MARKER, {**finished, "leftovers": []})
        self.close()
        return out

    def close(self) -> None:
        """Releases the lock (the folder stays; ``--resume`` can continue it)."""
        self._lock.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close()
        if kind is None:
            return
        moved = self.completed and (_read_marker(self.out) or {}).get("run_id") == self.run_id
        if moved:
            where = f"the finished run is in {self.out}"
        elif self.completed and not self.resumable:
            where = (f"the finished run is kept in {self._path}; move it over {self.out} "
                     f"yourself")
        elif self.resumable:
            where = (f"the run so far is in {self._path}; add --resume to the same command to "
                     f"continue it")
        else:
            where = (f"the run so far is in {self._path}; this experiment cannot resume: the "
                     f"same command starts it over")
        if issubclass(kind, KeyboardInterrupt):
            print(f"\ninterrupted: {where}", flush=True)
            return
        if issubclass(kind, (OSError, PartialRunError, FloatingPointError)):
            # A full disk, a folder made read-only, a damaged checkpoint, an environment that
            # returns NaN (agents.NonFiniteUpdatesError): the user's files and the partial run
            # are intact, and a traceback would hide what to do.
            raise SystemExit(f"error: {error} ({where})") from None


def open_run(out, config, record: dict | None = None, *, experiment: str, resume: bool,
             resumable: bool = True) -> RunFolder:
    """Creates (or reopens, to resume) the partial folder of a run into ``out`` and locks it.

    Args:
      out: the results folder the complete run will replace.
      config: the experiment's config dataclass; written into ``config.json`` with
        ``record``, the library versions and the machine (``records.machine``), and compared
        with the partial run's on resume (the versions and machine are not: they are
        rewritten).
      record: more to write into ``config.json`` (the data source, ...).
      experiment: the experiment's name, recorded in ``run.json``: a run replaces only a
        folder of its own experiment.
      resume: continue the partial run in ``<out>.partial`` if there is one (else start).
      resumable: ``False`` for experiments without checkpoints: a stale partial folder is
        then emptied (it holds nothing that could be continued) and the run starts over.

    Raises:
      PartialRunError: ``out`` is not a folder a run may replace; a partial run exists and
        ``resume`` is False, or it was made with another config, or another process is
        running it; or ``<out>.partial`` is not a partial run of this package.
    """
    out = Path(out)
    path = partial_path(out)
    recover_directory(out)
    _check_replaceable(out, experiment)
    config_dict = dataclasses.asdict(config)
    made = [p for p in (path, *path.parents) if not p.exists()]  # what a failed start removes
    try:
        path.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    if not created and (not path.is_dir() or path.is_symlink()):
        raise PartialRunError(f"{path} is in the way of this run's partial folder and is not "
                              f"one; move it away.")
    lock = None
    try:
        if not created and (path / LOCK).exists():
            lock = _Lock(path)  # first: a live run is named by its PID, whatever else is here
        # Besides the lock, a partial run holds run.json (or, as it starts, its temporaries).
        if not created and _read_marker(path) is None and any(
                not is_temporary(name) for name in set(os.listdir(path)) - {LOCK}):
            raise PartialRunError(f"{path} holds files that are not a partial run of this "
                                  f"package (no {MARKER}); move it away to run into {out}.")
        lock = lock or _Lock(path)  # raises if another process has it
        resumed = _reopen(path, out, config_dict, record, experiment, resume, resumable,
                          created)
        marker = _read_marker(path) if resumed else None
        run_id = marker["run_id"] if marker else uuid.uuid4().hex
        write_json(path / MARKER, {"package": PACKAGE, "experiment": experiment,
                                   "run_id": run_id, "finished": False})
        write_json(path / "config.json", {"config": config_dict, **(record or {}),
                                          "versions": library_versions(),
                                          "machine": machine()})
    except BaseException:
        if created and lock is not None:  # a failed start writes nothing: delete, then unlock
            shutil.rmtree(path, ignore_errors=True)
            for parent in made[1:]:
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only if still empty
        if lock is not None:
            lock.release()
        raise
    return RunFolder(out, path, resumed, experiment, resumable, lock, run_id)


def _reopen(path, out, config_dict, record, experiment, resume, resumable, created) -> bool:
    """With the lock held: whether the partial folder holds an earlier attempt to continue
    (emptying it if that cannot be resumed); raises ``PartialRunError`` if it is in the way."""
    entries = {name for name in os.listdir(path) if name != LOCK and not is_temporary(name)}
    if created or not entries:
        return False
    marker = _read_marker(path)
    if marker.get("experiment") != experiment:
        raise PartialRunError(f"{path} holds an unfinished run of experiment "
                              f"{marker.get('experiment')!r}; move it away to run into {out}.")
    if marker.get("finished") and not resumable:  # resumable: --resume finishes it again
        raise PartialRunError(f"{path} holds a finished run that was not moved into {out} "
                              f"(files of yours were in the way); move it over {out} yourself, "
                              f"or delete it.")
    if not resumable:
        print(f"emptying {path}: an unfinished earlier run this experiment cannot resume")
        for entry in entries:
            target = path / entry
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        return False
    if not resume:
        raise PartialRunError(
            f"{path} holds an unfinished run of this experiment that no process is running. "
            f"Pass --resume to continue it from its last checkpoint, or delete {path} to "
            f"start over.")
    try:
        earlier = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        earlier = None
    # The record too: data resolved at run time (source "auto") must not change under a
    # resumed run.
    now = json.loads(json.dumps({"config": config_dict, **(record or {})}, default=jsonable))
    if not isinstance(earlier, dict) or _comparable(earlier.get("config", {})) != \
            _comparable(now["config"]) or any(earlier.get(k) != v for k, v in now.items()
                                               if k != "config"):
        raise PartialRunError(
            f"{path} holds an unfinished run with another config or data (see its "
            f"config.json); --resume continues a run only with the flags it was started "
            f"with. Delete {path} to start a new run.")
    removed = remove_temporaries(path)
    print(f"resuming the unfinished run in {path}"
          + (f" (removed {len(removed)} leftover temporary files)" if removed else ""))
    return True


def copy_partial_run(out_of_chief, out) -> None:
    """Copies the partial run into ``out_of_chief`` as the partial run into ``out`` (another
    process of the same job resumes it), without its lock, temporaries or TensorBoard files
    (rewritten on resume).

    Raises:
      OSError: there is no partial run there that this process can read, or the copy failed.
    """
    source = partial_path(out_of_chief)
    if not (source / "config.json").is_file():
        raise OSError(f"the chief resumes {source}, which this worker cannot read: with "
                      f"--resume, --out must be on storage every worker shares, at the same "
                      f"path. Received: --out {out_of_chief}")
    shutil.copytree(source, partial_path(out), ignore=lambda folder, names: [
        name for name in names if name in (LOCK, "tensorboard") or is_temporary(name)])


@contextlib.contextmanager
def errors_before_start(*errors):
    """Turns the errors a run can meet before it starts (``PartialRunError``, ``OSError`` and
    ``errors``: a bad environment, unreadable data) into a one-line ``SystemExit``."""
    try:
        yield
    except (PartialRunError, OSError, *errors) as error:
        raise SystemExit(f"error: {error}") from None
