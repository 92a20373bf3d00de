"""Saving an agent into a folder, crash-safely, and reading it back.

A save is ``agent.json`` (format, environment id, every hyperparameter, the counters, and the
name of the state files) plus ``state-<n>.index`` / ``state-<n>.data-*``: a
``tf.train.Checkpoint`` of the networks, both Adam optimizers (moments and step count) and
the skipped-update counts. ``agent.json`` is the commit point: new state files are written
first under a new number, then ``agent.json`` is replaced in one ``os.replace``, and only then
are the previous save's files deleted. A crash or Ctrl-C at any moment leaves either the
previous save or the new one, whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import tensorflow as tf

SAVE_FORMAT = 3
AGENT_FILE = "agent.json"
COUNTERS = ("env_steps", "episodes", "updates", "consecutive_skipped_updates")
_KINDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
          "tuple[int, ...]": "a list of integers", "dict": "a JSON object"}


def write_save(path, meta: dict, trackables: dict) -> Path:
    """Writes ``meta`` (JSON) and the variables of ``trackables`` into the folder ``path``,
    replacing an earlier save there.

    Raises:
      ValueError: ``path`` is a folder with other files in it and no ``agent.json`` (not an
        earlier save), which saving would delete.
    """
    path = Path(path)
    old = list(path.iterdir()) if path.is_dir() else []
    if old and not (path / AGENT_FILE).is_file():
        raise ValueError(f"path must be a new or empty folder, or one written by "
                         f"Reinforce.save (saving replaces the folder). Received: "
                         f"path={str(path)!r}, which holds other files")
    path.mkdir(parents=True, exist_ok=True)
    number = 1 + max((int(m[1]) for p in old if (m := re.fullmatch(r"state-(\d+)\.index",
                                                                    p.name))), default=0)
    tf.train.Checkpoint(**trackables).write(str(path / f"state-{number}"))
    tmp = path / f".{AGENT_FILE}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps({"format": SAVE_FORMAT, **meta, "state": f"state-{number}"},
                           indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / AGENT_FILE)  # the commit: from here on, the new save is the save
    for p in old:
        if p.name not in (AGENT_FILE, tmp.name):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return path


def read_meta(path, config_type) -> dict:
    """``agent.json`` of the save in ``path``, checked: every field present with a value of
    its type (the config's types are ``config_type``'s annotations), counters ``>= 0``, then
    ``config`` built as a ``config_type`` (whose own checks apply). A missing hyperparameter
    must not fall back to today's default.

    Raises:
      ValueError: naming the file and the field.
    """
    meta_path = Path(path) / AGENT_FILE
    if not meta_path.is_file():
        raise ValueError(f"path must be a folder written by Reinforce.save (with {AGENT_FILE})."
                         f" Received: path={str(path)!r}")

    def bad(what):
        return ValueError(f"{meta_path}: {what}")

    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad(f"not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise bad(f"must hold a JSON object. Received: {type(meta).__name__}")
    if meta.get("format") in (1, 2) and not isinstance(meta["format"], bool):
        raise bad(f"written by an older gradlab (format {meta['format']}), which this one "
                  f"cannot load. Its policy network is in policy.keras "
                  f"(keras.models.load_model reads it); retrain to continue training.")
    if meta.get("format") != SAVE_FORMAT or isinstance(meta["format"], bool):
        raise bad(f"format must be {SAVE_FORMAT}. Received: format={meta.get('format')!r}")
    fields = {f.name: f.type for f in dataclasses.fields(config_type)}
    saved = {"env": "str | None", "config": "dict", "state": "str",
             **dict.fromkeys(COUNTERS, "int")}
    for values, kinds in ((meta, saved), (None, fields)):
        values = meta["config"] if values is None else values  # once the meta is checked
        for name, kind in kinds.items():
            label = f"config field {name!r}" if kinds is fields else name
            if name not in values:
                raise bad(f"{label} is missing (every hyperparameter is saved; a default "
                          "would silently change the agent)" if kinds is fields else
                          f"field {name!r} is missing")
            value = values[name]
            if not _has_kind(kind, value) or (name in COUNTERS and value < 0):
                raise bad(f"{label} must be {_describe(kind)}"
                          f"{' >= 0' if name in COUNTERS else ''}. Received: {value!r}")
    config = meta["config"]
    for name in sorted(config.keys() - fields.keys()):
        raise bad(f"config field {name!r} is not a {config_type.__name__} field")
    if not re.fullmatch(r"state-\d+", meta["state"]):
        raise bad(f"state must name the state files. Received: state={meta['state']!r}")
    try:
        meta["config"] = config_type(**{**config, "hidden_sizes": tuple(config["hidden_sizes"])})
    except (ValueError, TypeError) as e:
        raise bad(f"config: {e}") from None
    return meta


def _describe(kind: str) -> str:
    optional = kind.endswith(" | None")
    return _KINDS[kind.removesuffix(" | None")] + (" or null" if optional else "")


def _has_kind(kind: str, value) -> bool:
    """Whether the JSON ``value`` fits the annotation ``kind`` (a config field's type)."""
    if kind.endswith(" | None"):
        return value is None or _has_kind(kind.removesuffix(" | None"), value)
    if kind == "tuple[int, ...]":
        return isinstance(value, list) and all(_has_kind("int", v) for v in value)
    if isinstance(value, bool):
        return kind == "bool"
    return isinstance(value, {"int": int, "float": (int, float), "str": str,
                              "dict": dict}.get(kind, ()))


def restore(path, meta: dict, trackables: dict) -> None:
    """Reads the state files ``meta`` names into ``trackables`` (built, as when saved).

    Raises:
      ValueError: the files are missing, damaged, or hold other variables.
    """
    prefix = Path(path) / meta["state"]
    try:
        tf.train.Checkpoint(**trackables).read(str(prefix)).assert_consumed()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise ValueError(f"{prefix}: cannot restore the saved networks and optimizers "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
