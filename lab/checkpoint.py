"""Training state on disk: arrays plus a JSON record, written as one folder atomically.

A checkpoint is what a run needs to continue exactly where it stopped: weights, optimizer
slots and step counters, random-generator states, and counters or metrics of its own.
``save_checkpoint`` writes ``arrays.npz`` and ``state.json`` into a folder that replaces the
previous checkpoint in one step (``lab.atomic.atomic_directory``), so a crash or Ctrl-C while
writing leaves the previous checkpoint whole. ``load_checkpoint`` reads it back and names the
file and the field when something is missing or malformed.

Keras optimizers keep their state in ``optimizer.variables`` (the iteration count, then the
slots in the order of the variables they were built for): ``optimizer_state`` and
``restore_optimizer`` copy it out and back, so a resumed Adam continues with its moments and
its bias correction instead of starting over.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from experiments.atomic import atomic_directory

ARRAYS = "arrays.npz"
STATE = "state.json"


def save_checkpoint(path, arrays: dict[str, list], state: dict) -> Path:
    """Writes a checkpoint folder at ``path``, replacing any previous one atomically.

    Args:
      path: the checkpoint folder.
      arrays: ``{group: [array, ...]}``, e.g. ``{"weights": model.get_weights()}``; each group
        is read back as a list in the same order.
      state: anything JSON can hold (counters, metrics rows, generator states).

    Returns:
      ``path``.
    """
    flat = {}
    for group, values in arrays.items():
        if "/" in group:
            raise ValueError(f"array group names must not contain '/'. Received: {group!r}")
        for i, value in enumerate(values):
            flat[f"{group}/{i:05d}"] = np.asarray(value)
    with atomic_directory(path) as tmp:
        with open(tmp / ARRAYS, "wb") as f:
            np.savez(f, **flat)
        (tmp / STATE).write_text(json.dumps({"arrays": {g: len(v) for g, v in arrays.items()},
                                             "state": state}, indent=1) + "\n")
    return Path(path)


def has_checkpoint(path) -> bool:
    """Whether ``path`` holds a checkpoint written by ``save_checkpoint``."""
    return (Path(path) / STATE).is_file()


def load_checkpoint(path) -> tuple[dict[str, list[np.ndarray]], dict]:
    """Reads a checkpoint folder written by ``save_checkpoint``.

    Returns:
      ``(arrays, state)`` as they were saved.

    Raises:
      ValueError: the folder, ``state.json`` or ``arrays.npz`` is missing or malformed; the
        message names the file.
    """
    path = Path(path)
    state_path, arrays_path = path / STATE, path / ARRAYS
    try:
        record = json.loads(state_path.read_text())
        counts, state = record["arrays"], record["state"]
    except FileNotFoundError:
        raise ValueError(f"{state_path}: no checkpoint here (file missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError) as e:
        raise ValueError(f"{state_path}: not a checkpoint record ({type(e).__name__}: {e})"
                         ) from None
    try:
        with np.load(arrays_path, allow_pickle=False) as data:
            arrays = {group: [data[f"{group}/{i:05d}"] for i in range(count)]
                      for group, count in counts.items()}
    except FileNotFoundError:
        raise ValueError(f"{arrays_path}: checkpoint arrays missing") from None
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{arrays_path}: checkpoint arrays unreadable ({e})") from None
    return arrays, state


def optimizer_state(optimizer) -> list[np.ndarray]:
    """The values of a built Keras optimizer's variables (iterations and slots)."""
    return [np.array(v.numpy()) for v in optimizer.variables]


def restore_optimizer(optimizer, values) -> None:
    """Assigns ``values`` (from ``optimizer_state``) to a built optimizer's variables.

    Raises:
      ValueError: the number or shapes of the values do not match the optimizer's variables
        (an optimizer built for another model, or another kind of optimizer).
    """
    variables = optimizer.variables
    if len(values) != len(variables):
        raise ValueError(f"values must hold one array per optimizer variable, "
                         f"{len(variables)}. Received: {len(values)} arrays")
    for i, (variable, value) in enumerate(zip(variables, values)):
        if tuple(variable.shape) != tuple(np.shape(value)):
            raise ValueError(f"values[{i}] must have the shape of optimizer variable "
                             f"{variable.path}, {tuple(variable.shape)}. Received: "
                             f"shape {tuple(np.shape(value))}")
    for variable, value in zip(variables, values):
        variable.assign(value)
