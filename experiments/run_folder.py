"""A results folder that always holds one complete run.

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

Leftovers of writes killed outright (temporary files, a half-swapped folder) are removed when
a partial run is resumed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from experiments.records import library_versions, write_json
from lab.atomic import recover_directory, remove_temporaries, replace_directory

PARTIAL_SUFFIX = ".partial"
# Fields that say how to run, not what to compute: a resumed run may change them.
RUN_CONTROL_FIELDS = ("resume", "progress")


class PartialRunError(RuntimeError):
    """A partial run is in the way of a new one or does not match the run to resume, or
    ``--out`` is not a results folder that a finished run may replace."""


def partial_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + PARTIAL_SUFFIX)


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in RUN_CONTROL_FIELDS}


@dataclasses.dataclass
class RunFolder:
    """The partial folder of one run (``path``) and where it goes when complete (``out``).

    ``resumed`` tells whether ``path`` already held files of an earlier attempt.
    """
    out: Path
    path: Path
    resumed: bool

    def finish(self) -> Path:
        """Moves the complete run into ``out``, replacing the previous one; returns ``out``."""
        remove_temporaries(self.path)
        return replace_directory(self.path, self.out)


def open_run(out, config, record: dict | None = None, *, resume: bool,
             resumable: bool = True) -> RunFolder:
    """Creates (or reopens, to resume) the partial folder of a run into ``out``.

    Args:
      out: the results folder the complete run will replace.
      config: the experiment's config dataclass; written into ``config.json`` with
        ``record`` and the library versions, and compared with the partial run's on resume.
      record: more to write into ``config.json`` (the data source, ...).
      resume: continue the partial run in ``<out>.partial`` if there is one (else start).
      resumable: ``False`` for experiments without checkpoints: a stale partial folder is
        then deleted (it holds nothing that could be continued) and the run starts over.

    Raises:
      PartialRunError: a partial run exists and ``resume`` is False, or it was made with
        another config.
    """
    out = Path(out)
    path = partial_path(out)
    recover_directory(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise PartialRunError(f"--out must be a results folder (it is replaced as a whole "
                              f"when the run finishes), not a file or a symbolic link. "
                              f"Received: {out}")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise PartialRunError(f"{out} holds files that are not an earlier run of an experiment "
                              f"(no config.json); a finished run replaces its --out folder as a "
                              f"whole, so choose a new or empty folder.")
    config_dict = dataclasses.asdict(config)
    if path.exists() and not resumable:
        print(f"removing {path}: an unfinished earlier run this experiment cannot resume")
        shutil.rmtree(path)
    resumed = path.exists()
    if resumed and not resume:
        raise PartialRunError(
            f"{path} holds an unfinished run of this experiment. Pass --resume to continue it "
            f"from its last checkpoint, or delete {path} to start over.")
    if resumed:
        try:
            earlier = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            earlier = None
        # The record too: data resolved at run time (source "auto") must not change under a
        # resumed run.
        now = json.loads(json.dumps({"config": config_dict, **(record or {})}, default=str))
        if not isinstance(earlier, dict) or _comparable(earlier.get("config", {})) != \
                _comparable(now["config"]) or any(earlier.get(k) != v for k, v in now.items()
                                                   if k != "config"):
            raise PartialRunError(
                f"{path} holds an unfinished run with another config or data (see its "
                f"config.json); "
                f"--resume continues a run only with the flags it was started with. Delete "
                f"{path} to start a new run.")
        removed = remove_temporaries(path)
        print(f"resuming the unfinished run in {path}"
              + (f" (removed {len(removed)} leftover temporary files)" if removed else ""))
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "config.json", {"config": config_dict, **(record or {}),
                                      "versions": library_versions()})
    return RunFolder(out, path, resumed)
