"""The order every experiment runs in: config -> start -> run -> finish -> report.

An experiment module defines its config dataclass and three functions, and its ``main`` is one
call::

    def main(argv=None) -> dict:
        return run_experiment(Config, argv, name="curvature", run=run, report=report)

``run_experiment`` parses the command line into the config (``experiments.cli``) and applies
its ``--quick`` caps (``config.resolved()``); calls ``start(config)``, which checks and loads
what the run needs (an environment, data) before anything is written, and returns it with a
record for ``config.json``; opens the run folder (``experiments.run_folder``: locked, resumed
with ``--resume`` where the experiment is resumable); calls ``run(config, folder, started)``,
which writes the metrics, ``summary.json`` and plots into ``folder.path`` and returns the
summary; moves the finished run into place; and prints ``report(config, summary, out)``.
TensorFlow's op determinism is on for every run. Errors before the folder opens are one line
and write nothing; Ctrl-C and failed writes after
are handled by the run folder, in one place for every experiment.

Processes running one command in step (``workers``: a ``tf.distribute`` multi-worker job)
open their runs between two barriers that every worker reaches: the chief says whether it
opened its run (-1: no; 1: resumed; 0: fresh), and the others (writing into scratch folders)
copy its partial run to resume from the same state; then each says whether it opened its
own (-1: no). Any -1 stops them all, rather than leave them waiting for a process gone.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import tensorflow as tf

from experiments.cli import parse_config
from experiments.run_folder import copy_partial_run, errors_before_start, open_run


def run_experiment(config_cls, argv=None, *, name: str, run: Callable,
                   start: Callable | None = None, start_errors: tuple = (),
                   resumable: bool = False, leftovers: tuple = (),
                   report: Callable | None = None, workers: Callable | None = None) -> dict:
    """Runs one experiment from its command line; returns its summary.

    Args:
      config_cls: the experiment's frozen config dataclass; it has ``out_dir`` or ``out``
        (where the results go), ``resolved()`` (the config with ``--quick``'s caps) and, if
        ``resumable``, a ``resume`` field.
      argv: the command line (default ``sys.argv[1:]``).
      name: the experiment's name, recorded in ``run.json``.
      run: ``run(config, folder, started) -> summary``.
      start: ``start(config) -> (started, record)``, before anything is written; ``record``
        goes into ``config.json`` (and must match on resume).
      start_errors: exception types ``start`` raises for bad input (besides ``OSError`` and
        ``ValueError``), reported as one-line errors.
      resumable: whether ``--resume`` continues a partial run (else a stale partial folder
        is emptied and the run starts over).
      leftovers: names in the run folder that only a resume needs (checkpoints, progress
        files), deleted once the run is finished.
      report: ``report(config, summary, out)`` prints the headline.
      workers: ``workers(config) -> (is_chief, barrier)`` for a run on several processes in
        step (else ``None``), called first; ``barrier(value)`` returns, once every worker has
        called it, the sum of their values. Only the chief writes ``out``.
    """
    description = sys.modules[config_cls.__module__].__doc__.split("\n")[0]
    config = parse_config(config_cls, argv, description=description).resolved()
    # Deterministic kernels, for every experiment alike: a rerun on this machine is
    # bit-identical, and a run's numbers do not depend on which experiments ran before it in
    # the process (the flag is process-wide and cannot be turned off). Its cost is measured
    # in benchmarks/bench_robust_training.py.
    tf.config.experimental.enable_op_determinism()
    chief, barrier = (workers(config) if workers else None) or (True, None)
    out = getattr(config, "out_dir", None) or config.out
    with contextlib.ExitStack() as scratch:
        if not chief:  # the chief's run is the one kept: the others run in scratch folders
            chiefs = out
            out = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix=name))) / "out"
            if (chief_opened := barrier(0.0)) < 0:
                _stop("the chief")
        try:
            with errors_before_start(ValueError, *start_errors):
                if not chief and chief_opened > 0:  # it resumed: so do the others, alike
                    copy_partial_run(chiefs, out)
                started, record = start(config) if start is not None else (None, {})
                folder = open_run(out, config, record, experiment=name,
                                  resume=resumable and config.resume, resumable=resumable)
        except BaseException:  # a bad start, or Ctrl-C: the other workers wait for word
            if barrier is not None:
                barrier(-1.0)
            raise
        with folder:
            if barrier is not None:
                if chief:
                    barrier(float(folder.resumed))
                if barrier(0.0) < 0:
                    _stop("another worker" if chief else "the chief or another worker")
            summary = run(config, folder, started)
            out = folder.finish(leftovers=leftovers)
    if report is not None:
        report(config, summary, out)
    return summary


def _stop(who: str):
    raise SystemExit(f"error: {who} could not open its run (its output says why); this "
                     f"process stops too")
