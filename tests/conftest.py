"""Shared test set-up: quiet TensorFlow, float64 helpers for derivative checks."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def tiny_mlp_f64():
    """A seeded float64 tanh MLP (3 -> 4 -> 2) with a batch and a scalar loss closure."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((3,), dtype="float64"),
        keras.layers.Dense(4, activation="tanh", dtype="float64"),
        keras.layers.Dense(2, dtype="float64"),
    ])
    x = tf.constant(np.random.default_rng(2).normal(size=(6, 3)))
    y = tf.constant([0, 1, 1, 0, 1, 0])

    def loss():
        logits = model(x, training=False)
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    return model, loss


@pytest.fixture
def fd_grad():
    """``fd_grad(f, variables)``: see ``finite_difference_grad``."""
    return finite_difference_grad


def finite_difference_grad(f, variables, h=1e-6):
    """Central-difference gradient of the scalar ``f()`` in the variables (float64)."""
    grads = []
    for v in variables:
        base = v.numpy().copy()
        g = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            for sign in (1, -1):
                shifted = base.copy()
                shifted[idx] += sign * h
                v.assign(shifted)
                g[idx] += sign * float(f()) / (2 * h)
            v.assign(base)
        grads.append(g)
    return grads


@pytest.fixture
def fresh_process():
    """``fresh_process(script, expect)``: see ``run_in_fresh_process``."""
    return run_in_fresh_process


def run_in_fresh_process(script: str, expect: str, timeout: int = 600):
    """Runs ``script`` with a new Python (e.g. to configure logical devices, which must happen
    before TensorFlow starts) and checks it succeeds and prints ``expect``."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert expect in result.stdout


@pytest.fixture
def read_tensorboard():
    """``read(folder) -> {run: {tag: [(step, value), ...]}}`` for the event files under
    ``folder`` (a run is an event file's folder, relative to ``folder``)."""
    def read(folder):
        runs = {}
        for path in sorted(folder.rglob("events.out.tfevents.*")):
            run = runs.setdefault(str(path.parent.relative_to(folder)), {})
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    run.setdefault(value.tag, []).append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
        return runs
    return read


@pytest.fixture
def read_error(capsys):
    """``read() -> str``: what was written to stderr so far, as one line. Usage errors come
    from tyro, boxed and wrapped to the terminal's width; this undoes both."""
    def read():
        return " ".join(capsys.readouterr().err.replace("\u2502", " ").split())
    return read


@pytest.fixture
def tensorboard_holds(read_tensorboard):
    """``check(folder, rows, run_keys, step_key, tags)``: the event files under ``folder``
    hold exactly the metrics ``rows`` (dicts as read from a CSV, or the CSV's path): for every
    run (the
    ``run_keys`` columns, as ``TensorBoardLog`` names it) and tag, one point per row at the
    row's ``step_key``, no more and no fewer (a resumed run neither loses nor repeats any)."""
    def check(folder, rows, run_keys, step_key, tags):
        if isinstance(rows, (str, os.PathLike)):  # a metrics CSV
            import csv

            with open(rows, newline="") as f:
                rows = list(csv.DictReader(f))
        runs = read_tensorboard(folder)
        expected = {}
        for row in rows:
            run = "/".join(f"{key}_{row[key]}" for key in run_keys)
            for tag in tags:
                expected.setdefault(run, {}).setdefault(tag, []).append(
                    (int(row[step_key]), float(row[tag])))
        assert set(runs) == set(expected)
        for run, per_tag in expected.items():
            for tag, points in per_tag.items():
                got, want = sorted(runs[run][tag]), sorted(points)
                assert [step for step, _ in got] == [step for step, _ in want], (run, tag)
                # Event files hold float32: equal to the CSV's float64 to float32 precision.
                np.testing.assert_allclose([v for _, v in got], [v for _, v in want],
                                           rtol=1e-6, err_msg=f"{run} {tag}")
    return check


@pytest.fixture
def kill_when():
    """``kill_when(module, args, ready, timeout=240)``: runs ``python -m module *args`` and
    kills it with SIGKILL (nothing runs on the way out) as soon as ``ready()`` is true;
    fails if the process ended first."""
    def run(module, args, ready, timeout=240):
        import signal
        import subprocess
        import sys
        import time

        process = subprocess.Popen([sys.executable, "-m", module, *args],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "CI": "1"})
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    if ready():
                        break
                except (OSError, ValueError, KeyError, TypeError):
                    pass  # a file being written
                time.sleep(0.02)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return run


def pytest_collection_modifyitems(items):
    """A test named ``test_slow_*`` is a learning test with a fixed seed and budget: it must
    carry the ``slow`` mark, so ``-m "not slow"`` leaves out every one of them."""
    unmarked = [item.nodeid for item in items
                if item.name.startswith("test_slow_") and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("tests named test_slow_* must carry @pytest.mark.slow: "
                                + ", ".join(unmarked))


@pytest.fixture(autouse=True)
def interactive_ctrl_c():
    """Ctrl-C as in a terminal, even when the suite runs in the background (``cmd &``).

    A shell starts background jobs with SIGINT ignored, and Python then leaves it ignored;
    the run layer rightly leaves such a process alone, but the tests send SIGINT to check it.
    """
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
