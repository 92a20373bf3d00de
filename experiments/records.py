"""Writing an experiment's results: config, metrics, summary and plots, each atomically.

Every experiment writes into ``results/<experiment>/`` (through its partial folder,
``experiments.run_folder``):

- ``config.json``: the resolved configuration plus the seed(s) and library versions;
- ``metrics.csv``: one row per logged step;
- ``summary.json``: the headline numbers;
- PNG plots.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import platform
from importlib import metadata
from pathlib import Path

from lab.atomic import atomic_path, atomic_write

_LIBRARIES = ("gradlab", "tensorflow", "keras", "numpy", "gymnasium", "tensorflow-datasets",
              "matplotlib")


def library_versions() -> dict:
    """Python and library versions, for the record."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "item"):  # NumPy and TensorFlow scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path, obj) -> Path:
    """Writes ``obj`` as indented JSON (dataclasses and NumPy scalars allowed), atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, default=_jsonable, allow_nan=True) + "\n")


def write_csv(path, rows: list[dict]) -> Path:
    """Writes ``rows`` (dicts with the same keys) as CSV with a header, atomically."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return atomic_write(path, buffer.getvalue())


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Saves a Matplotlib figure as PNG atomically and closes it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)
