"""Smoke test of the gradient-penalty experiment: a --quick run end to end, plus its config."""

import csv
import json
import re

import pytest

from experiments import gradient_penalty as experiment

QUICK = ["--source", "sample", "--quick", "--no-progress"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradient_penalty") / "out"
    summary = experiment.main(QUICK + ["--out", str(out)])
    return out, summary


def test_quick_run_writes_every_file(quick_run):
    out, summary = quick_run
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "metrics.csv", "robustness.png", "run.json", "summary.json",
        "tensorboard"]
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not out.with_name("out.partial").exists()
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_config_records_the_resolved_run_and_each_methods_training(quick_run):
    out, _ = quick_run
    saved = json.loads((out / "config.json").read_text())
    config = saved["config"]
    assert config["quick"] and config["seeds"] == [0, 1] and config["epochs"] == 1
    assert config["train_examples"] == 1000 and config["eval_eps"] == [0.0, 0.1, 0.3]
    assert saved["data_source"] == "sample" and saved["versions"]["tensorflow"]
    training = saved["training"]
    assert set(training) == set(experiment.METHODS)
    penalties = {m: (t["input_gradient_penalty"], t["weight_decay"]) for m, t in training.items()}
    assert penalties == {"clean": (0.0, 0.0), "l2": (0.0, experiment.WEIGHT_DECAY),
                         "input_gradient": (experiment.INPUT_GRADIENT_PENALTY, 0.0),
                         "pgd": (0.0, 0.0)}
    assert [training[m]["method"] for m in experiment.METHODS] == ["clean"] * 3 + ["pgd"]


def test_metrics_have_a_row_per_seed_method_and_epoch(quick_run):
    out, _ = quick_run
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"seed", "method", "epoch", "loss", "clean_accuracy", "seconds"} <= set(rows[0])
    assert [(r["seed"], r["method"], r["epoch"]) for r in rows] == [
        (s, m, "1") for s in ("0", "1") for m in experiment.METHODS]
    assert all(float(r["seconds"]) > 0 and float(r["loss"]) > 0 for r in rows)


def test_summary_has_spreads_costs_and_warnings_per_method(quick_run):
    _, summary = quick_run
    assert summary["eps"] == [0.0, 0.1, 0.3] and summary["seeds"] == [0, 1]
    assert set(summary["methods"]) == set(experiment.METHODS)
    for entry in summary["methods"].values():
        clean = entry["clean_accuracy"]
        assert clean["min"] <= clean["mean"] <= clean["max"] and set(clean["per_seed"]) == {
            "0", "1"}
        for attack in ("fgsm", "pgd"):
            curve = entry[attack]
            assert len(curve["mean"]) == 3 and set(curve["per_seed"]) == {"0", "1"}
            assert all(lo <= m <= hi for lo, m, hi in zip(curve["min"], curve["mean"],
                                                          curve["max"]))
        assert entry["fgsm"]["mean"][0] == entry["pgd"]["mean"][0]  # eps 0: clean, once
        assert entry["cost_vs_clean"]["median"] > 0 and entry["seconds_per_epoch"]["min"] > 0
        assert set(entry["warnings"]) == {"0", "1"}
        assert all(isinstance(w, list) for w in entry["warnings"].values())
    assert summary["methods"]["clean"]["cost_vs_clean"]["median"] == 1.0
    assert summary["methods"]["input_gradient"]["claimed_eps"] == 0.1
    statement = summary["statement"]
    assert {"eps_0.1", "eps_0.3", "cost_vs_clean", "warnings", "text"} <= set(statement)
    assert "input_gradient" in statement["text"] and "PGD-10" in statement["text"]


def test_unreadable_data_fails_before_anything_is_written(tmp_path):
    (tmp_path / "digits").mkdir()
    with pytest.raises(SystemExit, match="no MNIST train images file"):
        experiment.main(["--quick", "--data-dir", str(tmp_path / "digits"),
                         "--out", str(tmp_path / "out")])
    assert [p.name for p in tmp_path.iterdir()] == ["digits"]


@pytest.mark.parametrize("flags, message", [
    (["--methods", "trades"], r"methods\[0\] must be one of"),
    (["--methods", "clean", "clean"], "methods must be one or more distinct values"),
    (["--seeds", "0", "0"], "seeds must be one or more distinct non-negative integers"),
    (["--epochs", "0"], "epochs must be an integer >= 1"),
    (["--input-gradient-penalty", "0"], r"input_gradient_penalty must be > 0"),
    (["--weight-decay", "-1"], r"weight_decay must be > 0"),
    (["--eval-eps", "0.2", "0.1"], "eval_eps must be one or more distinct values, in "
                                   "increasing order"),
    (["--eval-eps", "0", "0.1", "0.3", "nan"], r"eval_eps\[3\] must be a finite number in"),
    (["--methods"], r"methods must be one or more distinct values\. Received: methods=\(\)"),
    (["--small-eps", "0.15"], r"small_eps must be one of eval_eps"),
    (["--small-eps", "0.3", "--large-eps", "0.1"], "small_eps must be below large_eps"),
    (["--pgd-eps", "0"], r"pgd_eps must be in \(0\.0, 1\.0\]"),
    (["--train-examples", "100", "--holdout", "100"], "holdout must be below train_examples"),
])
def test_bad_flags_are_usage_errors_naming_the_argument(flags, message, tmp_path, read_error):
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(QUICK + ["--out", str(tmp_path / "out")] + flags)
    assert exit_info.value.code == 2
    assert re.search(message, read_error())
    assert not any(tmp_path.iterdir())  # nothing written


def test_quick_run_writes_tensorboard_runs_matching_the_metrics(quick_run, tensorboard_holds):
    out, _ = quick_run
    tensorboard_holds(out / "tensorboard", out / "metrics.csv", ("method", "seed"), "epoch",
                      ("clean_accuracy", "loss"))
