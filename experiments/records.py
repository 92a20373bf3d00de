"""Writing an experiment's results: config, metrics, summary and plots, each atomically.

Every experiment writes into ``results/<experiment>/`` (through its partial folder,
``experiments.run_folder``):

- ``config.json``: the resolved configuration plus the seed(s), library versions and the
  machine (float32 results differ across CPUs);
- ``metrics.csv``: one row per logged step;
- ``summary.json``: the headline numbers, with their spread over seeds (``over_seeds``);
- PNG plots: curves over seeds as a line and a min-max band (``band``);
- ``tensorboard/``: the metrics as TensorBoard scalars, one run per seed (and method).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from experiments.atomic import atomic_path, atomic_write

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


def machine() -> dict:
    """The CPU, core count and system a run ran on, for the record: float32 kernels give
    other digits on another CPU, which reinforcement learning amplifies."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:  # Linux
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def jsonable(value):
    """``value`` as JSON can hold it (``json.dumps``'s ``default``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "item"):  # NumPy and TensorFlow scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path, obj) -> Path:
    """Writes ``obj`` as indented JSON (dataclasses and NumPy scalars allowed), atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, default=jsonable, allow_nan=True) + "\n")


def write_csv(path, rows: list[dict]) -> Path:
    """Writes ``rows`` (dicts with the same keys) as CSV with a header, atomically."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return atomic_write(path, buffer.getvalue())


def write_results(folder, rows: list[dict], summary: dict) -> dict:
    """Writes an experiment's ``metrics.csv`` (``rows``) and ``summary.json`` into ``folder``;
    returns ``summary``."""
    write_csv(Path(folder) / "metrics.csv", rows)
    write_json(Path(folder) / "summary.json", summary)
    return summary


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (experiments run headless, and
    importing pyplot first would pick a GUI backend where one is installed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def runs_by_seed(rows: list[dict], **match) -> dict:
    """``{seed: rows}``: the metrics rows whose columns equal ``match`` (``method="pgd"``),
    grouped by seed, each group (and the seeds) in the rows' order."""
    runs = {}
    for row in rows:
        if all(row[key] == value for key, value in match.items()):
            runs.setdefault(row["seed"], []).append(row)
    return runs


def over_seeds(values, center: str = "mean") -> dict:
    """The spread over seeds of one number per seed: ``{center, "min", "max", "per_seed"}``.

    Args:
      values: ``{seed: number}`` (``per_seed`` is then keyed by the seed as a string) or a
        list of numbers, one per seed (``per_seed`` is the list).
      center: ``"mean"`` or ``"median"``.
    """
    per_seed = ({str(seed): float(v) for seed, v in values.items()} if isinstance(values, dict)
                else [float(v) for v in values])
    numbers = list(per_seed.values()) if isinstance(per_seed, dict) else per_seed
    return {center: float(getattr(np, center)(numbers)), "min": float(np.min(numbers)),
            "max": float(np.max(numbers)), "per_seed": per_seed}


def bootstrap_interval(values, confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one number per seed): the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the means of
    ``resamples`` resamples with replacement, drawn from a stream seeded by ``seed`` (so the
    interval is a function of the values alone). Efron & Tibshirani 1993, ch. 13."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty list of numbers. Received: {values!r}")
    draws = np.random.default_rng(seed).integers(0, values.size, (resamples, values.size))
    means = values[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def with_interval(values) -> dict:
    """``{"mean", "median", "ci95": [lo, hi], "per_seed"}`` of one number per seed, the
    interval by ``bootstrap_interval``."""
    values = [float(v) for v in values]
    return {"mean": float(np.mean(values)), "median": float(np.median(values)),
            "ci95": list(bootstrap_interval(values)), "per_seed": values}


def subplots(*args, **kwargs):
    """``(figure, axes)``: ``matplotlib.pyplot.subplots`` on the file-only backend."""
    return pyplot().subplots(*args, **kwargs)


def band(ax, x, runs, color, label=None, center=np.mean, alpha: float = 0.25, **line) -> None:
    """Draws runs over seeds (``runs``: one row per seed, one column per ``x``) as their
    ``center`` (a line, styled by ``line``) and their min-max (a band)."""
    runs = np.asarray(runs, dtype=float)
    ax.plot(x, center(runs, axis=0), color=color, label=label, **line)
    ax.fill_between(x, runs.min(axis=0), runs.max(axis=0), color=color, alpha=alpha,
                    linewidth=0)


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Saves a Matplotlib figure as PNG atomically and closes it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


class TensorBoardLog:
    """Writes metrics rows as TensorBoard scalars while an experiment runs.

    Each distinct combination of the ``run_keys`` columns is its own TensorBoard run, in
    ``folder/<key>_<value>/...`` (``seed_0``, ``method_pgd/seed_1``), so ``tensorboard
    --logdir results/`` compares seeds and methods side by side. Every other numeric column
    of a row becomes a scalar at the row's ``step_key`` value. ``seconds`` is the time this
    log spent writing; ``TensorBoardLog.spent`` adds up every log's in this process (the main
    job reports it per experiment).

    The event files are written anew from ``rows``, the rows a resumed run has already
    recorded: a process killed outright loses what its writers had buffered, and may have
    written rows that its last checkpoint does not hold, so the old files are not trusted.
    ``rows`` (attribute) is every row written so far, for a run to checkpoint.
    """
    spent = 0.0

    def __init__(self, folder, run_keys: tuple[str, ...], step_key: str, rows=()):
        # A callable gives the folder anew each time a writer opens (a run folder's check).
        self._folder = folder if callable(folder) else (lambda: Path(folder))
        self.folder = Path(self._folder())
        self.run_keys = tuple(run_keys)
        self.step_key = step_key
        self.seconds = 0.0
        self._writers = {}
        self.rows = []
        if self.folder.exists():
            shutil.rmtree(self.folder)
        for row in rows:
            self.add(row)

    def add(self, row: dict) -> None:
        # TensorBoard's own event writer and scalar protos, in plain Python: the same records
        # tf.summary.scalar writes, without a TensorFlow op per scalar (about ten times
        # cheaper per row, which matters for REINFORCE's many short updates).
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        start = time.perf_counter()
        self.rows.append(row)
        run = "/".join(f"{key}_{row[key]}" for key in self.run_keys) or "run"
        writer = self._writers.get(run)
        if writer is None:
            folder = Path(self._folder()) / run
            folder.mkdir(parents=True, exist_ok=True)
            writer = self._writers[run] = EventFileWriter(str(folder))
        summary = Summary()
        for name, value in row.items():
            if name in self.run_keys or name == self.step_key:
                continue
            if isinstance(value, (bool, str)) or value is None:
                continue
            summary.value.extend(scalar_pb(name, float(value)).value)
        writer.add_event(Event(wall_time=time.time(), step=int(row[self.step_key]),
                               summary=summary))
        self._spent(start)

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Flushes and closes every run's event file (call before the run folder moves)."""
        start = time.perf_counter()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._spent(start)

    def _spent(self, start: float) -> None:
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        TensorBoardLog.spent += elapsed
