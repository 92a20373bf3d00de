"""adversarial_train under MultiWorkerMirroredStrategy: two worker processes on localhost.

Each worker (``multi_worker_train.py``) joins the cluster through ``TF_CONFIG`` on loopback
ports, trains one epoch and exits by itself; the test bounds them in time.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from attacks.adversarial_training import (
    AdversarialTrainer,
    AdversarialTrainingConfig,
    adversarial_train,
)
from attacks.mnist import load_mnist_arrays
from attacks.models import small_cnn

SCRIPT = Path(__file__).with_name("multi_worker_train.py")
# A hang guard, not a timed assert: a two-worker fgsm_mnist --quick with the APGD worst case
# took over 240 s inside the full suite on 2 cores (the tests' runs now leave it out).
TIMEOUT_S = 600


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(command, cwd, *, kill_when=None, check=True):
    """Runs ``command(index, ports)`` for workers 0 and 1 of a localhost cluster, each with its
    ``TF_CONFIG``, until both exit (bounded by ``TIMEOUT_S``); fails with a worker's output
    if it fails. With ``kill_when``, a callable polled every 50 ms, both are killed as soon as
    it returns True instead (it must, within the time bound). ``check=False`` returns the
    workers' ``(returncode, output)`` instead of failing."""
    ports = _free_ports(2)
    root = Path(__file__).parents[2]   # this checkout's packages, whatever is installed
    workers = []
    for i in (0, 1):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
               "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
               "TF_CONFIG": json.dumps({
                   "cluster": {"worker": [f"localhost:{p}" for p in ports]},
                   "task": {"type": "worker", "index": i}})}
        workers.append(subprocess.Popen(command(i), env=env, cwd=cwd or root, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        if kill_when is not None:
            deadline = time.monotonic() + TIMEOUT_S
            while not kill_when():
                assert time.monotonic() < deadline, "the workers never reached the kill point"
                assert all(w.poll() is None for w in workers), "a worker ended before the kill"
                time.sleep(0.05)
            return
        outputs = [w.communicate(timeout=TIMEOUT_S)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
            w.wait()
    if not check:
        return [(w.returncode, output) for w, output in zip(workers, outputs)]
    for i, (w, output) in enumerate(zip(workers, outputs)):
        assert w.returncode == 0, f"worker {i}:\n{output[-3000:]}"


def _run_cluster(tmp_path, method):
    _run_workers(lambda i: [sys.executable, str(SCRIPT), method,
                            str(tmp_path / f"worker_{i}.npz")], cwd=None)
    return [np.load(tmp_path / f"worker_{i}.npz") for i in (0, 1)]


def _weights(saved):
    return [saved[f"arr_{i}"] for i in range(len([k for k in saved.files
                                                   if k.startswith("arr_")]))]


def _single_process(method):
    import keras

    x, y = load_mnist_arrays("train", "sample")
    x, y = x[:512], y[:512]
    keras.utils.set_random_seed(0)
    model = small_cnn()
    config = AdversarialTrainingConfig(method=method, eps=0.3, epochs=1, batch_size=64,
                                       eps_ramp_epochs=0, guard_examples=64,
                                       guard_pgd_steps=2, seed=0)
    first_labels = next(iter(AdversarialTrainer(model, config, num_examples=512).batches(
        x, y, np.random.default_rng(0))))[1].numpy()
    adversarial_train(model, x, y, config)
    return model.get_weights(), first_labels


@pytest.mark.slow
def test_slow_two_workers_train_as_one_on_their_shards(tmp_path):
    workers = _run_cluster(tmp_path, "fgsm_rs")
    # Both end with the same weights, bit for bit.
    for a, b in zip(_weights(workers[0]), _weights(workers[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    # Each worker trains on its half of every global batch: together, the first batch.
    _, first_labels = _single_process("clean")
    labels = [w["labels"] for w in workers]
    assert [len(lab) for lab in labels] == [32, 32]
    np.testing.assert_array_equal(np.sort(np.concatenate(labels)), np.sort(first_labels))
    # The random starts differ between workers (the replica id is folded into the seed).
    deltas = [w["delta"] for w in workers]
    assert deltas[0].shape == deltas[1].shape == (32, 28, 28, 1)
    assert np.abs(deltas[0]).max() <= 0.3 + 1e-6
    assert not np.allclose(deltas[0], deltas[1])
    # Only the chief (worker 0) writes the checkpoint.
    assert [bool(w["is_chief"]) for w in workers] == [True, False]
    assert (tmp_path / "checkpoint_0").is_dir() and not (tmp_path / "checkpoint_1").exists()


@pytest.mark.slow
def test_slow_two_workers_match_one_process_on_the_same_global_batch(tmp_path):
    """Clean training (no random starts): two workers of 32 examples each compute the global
    batch's mean gradient, as one process does with 64, up to float summation order."""
    workers = _run_cluster(tmp_path, "clean")
    single, _ = _single_process("clean")
    for a, b in zip(_weights(workers[0]), single, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def _fgsm_mnist_command(out, *extra):
    """A small two-method run; the evaluation, which each worker computes alike, is FGSM only:
    PGD and the worst case are left to the single-process tests."""
    return lambda i: [sys.executable, "-m", "experiments.fgsm_mnist", "--quick", "--methods",
                      "clean", "fgsm_rs", "--epochs", "2", "--attacks", "fgsm",
                      "--train-examples", "256", "--eval-examples", "50",
                      "--curve-examples", "50", "--strategy",
                      "multi_worker", "--no-progress", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    """One unbroken two-worker fgsm_mnist run: its own test checks what it wrote, and the
    kill-and-resume test compares with it (one run of two workers fewer)."""
    root = tmp_path_factory.mktemp("two_workers")
    _run_workers(_fgsm_mnist_command(root / "results"), cwd=root)
    return root


@pytest.mark.slow
def test_slow_fgsm_mnist_runs_on_two_workers_and_only_the_chief_writes(two_worker_run):
    """``python -m experiments.fgsm_mnist --strategy multi_worker`` on two localhost workers:
    both finish, the chief writes the whole results folder, the other writes nothing there."""
    out = two_worker_run / "results"
    assert sorted(p.name for p in two_worker_run.iterdir()) == ["results"]  # no partial, no extra
    assert {"config.json", "summary.json", "metrics.csv", "models"} <= {
        p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["config"]["strategy"] == \
        "multi_worker"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"clean", "fgsm_rs"}


@pytest.mark.slow
def test_slow_fgsm_mnist_on_two_workers_resumes_after_both_are_killed(tmp_path, two_worker_run):
    """Both workers are killed once the first method is done (the chief's partial run then
    holds its results, and maybe a checkpoint of the second); the same command with
    ``--resume`` on two new workers ends with the results of a run never stopped."""
    out = tmp_path / "results"
    progress = out.with_name(out.name + ".partial") / "progress" / "progress.json"
    _run_workers(_fgsm_mnist_command(out), cwd=tmp_path, kill_when=progress.is_file)
    assert not out.exists()
    _run_workers(_fgsm_mnist_command(out, "--resume"), cwd=tmp_path)
    expected = json.loads((two_worker_run / "results" / "summary.json").read_text())["methods"]
    resumed = json.loads((out / "summary.json").read_text())["methods"]
    for method in ("clean", "fgsm_rs"):
        for key in ("clean_accuracy", "fgsm_accuracy", "curve"):
            assert resumed[method][key] == expected[method][key], (method, key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


@pytest.mark.slow
def test_slow_a_chief_that_cannot_resume_stops_the_other_workers_too(tmp_path):
    """A partial run of another config: the chief refuses to resume it, and the other worker,
    waiting for word at the resume barrier, stops with an error instead of hanging."""
    out = tmp_path / "results"
    partial = out.with_name(out.name + ".partial")
    partial.mkdir()
    (partial / "config.json").write_text(json.dumps({"config": {"eps": 0.1}}))
    (partial / "run.json").write_text(json.dumps({"package": "gradlab", "run_id": "earlier",
                                                  "experiment": "fgsm_mnist"}))
    (chief, chief_output), (worker, worker_output) = _run_workers(
        _fgsm_mnist_command(out, "--resume"), cwd=tmp_path, check=False)
    assert chief != 0 and "holds an unfinished run with another config" in chief_output
    assert worker != 0 and "the chief could not open its run" in worker_output



@pytest.mark.slow
def test_slow_a_chief_that_cannot_start_stops_the_other_workers_too(tmp_path):
    """Without --resume too: a chief that refuses its --out (a user's folder) tells the other
    worker at the open barrier, which stops instead of waiting in a collective forever."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    (chief, chief_output), (worker, worker_output) = _run_workers(
        _fgsm_mnist_command(out), cwd=tmp_path, check=False)
    assert chief != 0 and "not a finished run of this package" in chief_output
    assert worker != 0 and "the chief could not open its run" in worker_output
    assert (out / "notes.txt").read_text() == "a user's file"
