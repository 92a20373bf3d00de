import csv
import json
import re

import keras
import numpy as np
import pytest

from attacks import adversarial_training
from experiments import fgsm_mnist as experiment

QUICK = ["--source", "sample", "--quick", "--no-progress"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fgsm_mnist")
    summary = experiment.main(QUICK + ["--out", str(out)])
    return out, summary


def test_quick_run_writes_every_file_the_readme_shows(quick_run):
    out, summary = quick_run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.csv", "summary.json", "robustness_curve.png",
            "adversarial_examples.png", "training_curves.png", "models"} <= names
    # --quick runs the first seed only.
    assert {p.name for p in (out / "models").iterdir()} == {
        f"{m}_seed0.keras" for m in experiment.DEFAULT_METHODS}
    assert json.loads((out / "summary.json").read_text())["methods"] == summary
    assert set(summary) == set(experiment.DEFAULT_METHODS)
    for method, s in summary.items():
        assert {"clean_accuracy", "fgsm_accuracy", "pgd_accuracy", "worst_case_accuracy",
                "seconds_per_epoch", "collapsed_seeds", "warnings", "curve_warnings",
                "per_seed"} <= set(s)
        assert set(s["per_seed"]) == {"0"}
        run = s["per_seed"]["0"]
        for key in experiment.HEADLINE:  # one seed: mean, min and max are its number
            assert s[key]["mean"] == s[key]["min"] == s[key]["max"] == run[key]
        assert 0 <= run["worst_case_accuracy"] <= run["pgd_accuracy"] + 1 / 100
        assert run["pgd_accuracy"] <= run["clean_accuracy"] + 1 / 100 <= 1 + 1 / 100, method
        # Two epochs of a five-epoch ramp: the models were trained at eps 0.12, not 0.3.
        assert s["trained_eps"] == pytest.approx(0.0 if method == "clean" else 0.12)
        assert run["epochs_trained"] == 2 and run["seconds_per_epoch"] > 0
        assert s["curve"]["eps"] == [0.0, 0.3] and s["curve"]["examples"] == 100
        assert s["curve"]["pgd"][0] == run["clean_accuracy"]  # the first 100 are the test set
        assert s["curve"]["worst_case"][0] == run["clean_accuracy"]
        assert s["examples"] == 100 and s["pgd"].startswith("PGD-40, step 0.01875")
        assert s["worst_case"].startswith("APGD-CE 25 iterations")  # --quick's budget
    # Two epochs on 1,000 digits already beat chance by far; the clean model falls to FGSM.
    clean = summary["clean"]["per_seed"]["0"]
    assert clean["clean_accuracy"] > 0.7
    assert clean["fgsm_accuracy"] < 0.5 * clean["clean_accuracy"]


def test_several_seeds_train_one_model_each_and_the_summary_spans_them(tmp_path):
    out = tmp_path / "out"
    summary = experiment.main(["--source", "sample", "--no-progress", "--methods", "clean",
                               "--epochs", "1", "--seeds", "3", "4", "--train-examples", "1000",
                               "--attacks", "fgsm", "pgd",
                               "--eval-examples", "100", "--curve-examples", "100",
                               "--eval-eps", "0", "0.3", "--restarts", "1", "--out", str(out)]
                              )["clean"]
    assert sorted(p.name for p in (out / "models").iterdir()) == [
        "clean_seed3.keras", "clean_seed4.keras"]
    per_seed = summary["per_seed"]
    assert set(per_seed) == {"3", "4"} and summary["curve"]["examples"] == 100
    values = [per_seed[s]["clean_accuracy"] for s in ("3", "4")]
    assert values[0] != values[1]  # two seeds, two models
    assert summary["clean_accuracy"] == {"mean": pytest.approx(np.mean(values)),
                                         "min": min(values), "max": max(values),
                                         "per_seed": {"3": values[0], "4": values[1]}}
    with open(out / "metrics.csv") as f:
        assert [(r["seed"], r["epoch"]) for r in csv.DictReader(f)] == [("3", "1"), ("4", "1")]


def test_the_shared_evaluation_model_gives_each_models_own_numbers():
    """One model evaluates every trained one (its attacks compile once): with each model's
    weights copied in, in turn, every number is the one the model itself gives."""
    from attacks.mnist import load_mnist_arrays
    from attacks.models import small_cnn

    x, y = (a[:64] for a in load_mnist_arrays("test", "sample"))
    config = experiment.ExperimentConfig(attacks=("fgsm", "pgd"), restarts=2)
    models = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        models.append(small_cnn())
    own = [experiment.evaluate(m, x, y, config, 0, 0.3) for m in models]
    shared = [experiment.evaluate(experiment.evaluation_model("small_cnn", m), x, y, config,
                                  0, 0.3) for m in models]
    assert shared == own and own[0] != own[1]
    assert experiment.evaluation_model("small_cnn", models[0]) is \
        experiment.evaluation_model("small_cnn", models[1])


def test_config_records_the_data_source_and_each_methods_recipe(quick_run):
    out, _ = quick_run
    config = json.loads((out / "config.json").read_text())
    assert config["data_source"] == "sample" and config["train_examples"] == 1000
    assert config["versions"]["tensorflow"]
    training = config["training"]
    assert set(training) == set(experiment.DEFAULT_METHODS)
    assert training["clean"]["lr_schedule"] == "cosine" and training["clean"]["shift"] == 2
    assert training["pgd"]["lr_schedule"] == "constant" and training["pgd"]["epochs"] == 2


def test_override_flags_replace_every_methods_recipe():
    config = experiment.ExperimentConfig(batch_size=128, shift=1, quick=True).resolved()
    for method in ("clean", "pgd"):
        training = experiment.training_config(method, config)
        assert (training.batch_size, training.shift, training.epochs) == (128, 1, 2)
    clean = experiment.training_config("clean", experiment.ExperimentConfig().resolved())
    assert (clean.lr_schedule, clean.shift, clean.epochs) == ("cosine", 2, 16)
    n_fgsm = experiment.training_config("n_fgsm", experiment.ExperimentConfig(
        n_fgsm_noise=1.0, n_fgsm_step=1.25))
    assert (n_fgsm.n_fgsm_noise, n_fgsm.n_fgsm_step) == (1.0, 1.25)
    default = experiment.training_config("n_fgsm", experiment.ExperimentConfig())
    assert (default.n_fgsm_noise, default.n_fgsm_step) == (2.0, 1.0)
    assert experiment.training_config("grad_align", experiment.ExperimentConfig(
        methods=("grad_align",), grad_align_lambda=2.0)).grad_align_lambda == 2.0
    # A default run trains every method, grad_align included (issue 21: every method in the
    # three-seed headline table).
    assert experiment.ExperimentConfig().methods == adversarial_training.METHODS
    # Every override flag is off by default and reaches the training config.
    assert {"batch_size", "learning_rate", "lr_schedule", "shift"} <= set(
        experiment.RECIPE_OVERRIDES)
    defaults = experiment.ExperimentConfig()
    for name in experiment.RECIPE_OVERRIDES:
        assert getattr(defaults, name) is None, name


def test_metrics_have_a_row_per_method_and_epoch(quick_run):
    out, _ = quick_run
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"method", "epoch", "eps", "loss", "clean_accuracy", "guard_pgd_accuracy",
            "seconds"} <= set(rows[0])
    assert [(r["method"], r["epoch"]) for r in rows] == [
        (m, e) for m in experiment.DEFAULT_METHODS for e in ("1", "2")]


def test_saved_models_reload_and_predict(quick_run):
    out, summary = quick_run
    from attacks.evaluation import accuracy
    from attacks.mnist import load_mnist_arrays

    x, y = (a[:100] for a in load_mnist_arrays("test", "sample"))
    model = keras.models.load_model(out / "models" / "pgd_seed0.keras")
    assert accuracy(model, x, y) == pytest.approx(summary["pgd"]["clean_accuracy"]["mean"])


def _metrics(folder):
    with open(folder / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _summary(folder):
    summary = json.loads((folder / "summary.json").read_text())
    for s in summary["methods"].values():
        s.pop("seconds_per_epoch")
        for run in s["per_seed"].values():
            run.pop("seconds_per_epoch")
    return summary


# The runs the interruption tests compare: small, and without the worst case (the quick run
# measures it), which the evaluation would repeat the same way after a resume.
TWO_METHODS = QUICK + ["--methods", "clean", "fgsm_rs", "--epochs", "2", "--attacks", "fgsm",
                       "pgd", "--train-examples", "300", "--eval-examples", "50",
                       "--curve-examples", "50"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A run of TWO_METHODS never stopped: what every interrupted run must end with."""
    out = tmp_path_factory.mktemp("fgsm_mnist_straight") / "out"
    experiment.main(TWO_METHODS + ["--out", str(out)])
    return out


def test_attacks_and_train_examples_set_what_runs_and_are_recorded(straight):
    config = json.loads((straight / "config.json").read_text())
    assert config["train_examples"] == 300 and config["config"]["attacks"] == ["fgsm", "pgd"]
    for method, s in _summary(straight)["methods"].items():
        assert "worst_case_accuracy" not in s and "worst_case" not in s, method
        assert s["examples"] == 50 and s["curve"]["examples"] == 50  # --quick's caps: 100
        assert {"fgsm", "pgd"} <= set(s["curve"]) and "worst_case" not in s["curve"]
        assert {"fgsm_accuracy", "pgd_accuracy", "clean_accuracy"} <= set(s)


def test_an_interrupted_run_keeps_the_old_results_and_resumes_exactly(straight, tmp_path,
                                                                      monkeypatch):
    out = tmp_path / "out"
    experiment.main(QUICK + ["--methods", "clean", "--epochs", "1", "--attacks", "fgsm",
                             "--train-examples", "200", "--out", str(out)])
    old_summary = (out / "summary.json").read_text()

    calls = []
    original = adversarial_training.AdversarialTrainer.train_epoch

    def interrupted(self, *args, **kwargs):  # Ctrl-C in fgsm_rs's second epoch
        calls.append(self.config.method)
        if calls.count("fgsm_rs") == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(adversarial_training.AdversarialTrainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiment.main(TWO_METHODS + ["--out", str(out)])
    monkeypatch.undo()
    assert (out / "summary.json").read_text() == old_summary  # the finished run, untouched
    partial = tmp_path / "out.partial"
    assert [(r["method"], r["epoch"]) for r in _metrics(partial)] == [
        ("clean", "1"), ("clean", "2"), ("fgsm_rs", "1")]
    assert sorted(p.name for p in (partial / "models").iterdir()) == ["clean_seed0.keras"]
    assert (partial / "progress" / "fgsm_rs_seed0").is_dir()  # its checkpoint

    experiment.main(TWO_METHODS + ["--out", str(out), "--resume"])
    assert not partial.exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in straight.iterdir())
    assert _metrics(out) == _metrics(straight)
    assert _summary(out) == _summary(straight)


def test_ctrl_c_during_evaluation_says_how_to_resume(straight, tmp_path, monkeypatch, capsys):
    calls = []
    original = experiment.evaluate

    def interrupted(*args, **kwargs):  # Ctrl-C while evaluating fgsm_rs
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(experiment, "evaluate", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        experiment.main(TWO_METHODS + ["--out", str(out)])
    monkeypatch.undo()
    assert f"the run so far is in {tmp_path / 'out.partial'}; add --resume to the same " \
        "command" in capsys.readouterr().out
    experiment.main(TWO_METHODS + ["--out", str(out), "--resume"])
    assert _metrics(out) == _metrics(straight) and _summary(out) == _summary(straight)


def test_a_run_killed_outright_resumes_with_every_epoch_in_tensorboard(
        straight, tmp_path, kill_when, tensorboard_holds):
    out = tmp_path / "out"
    metrics = tmp_path / "out.partial" / "metrics.csv"

    def fgsm_rs_has_trained_an_epoch():
        return any(r["method"] == "fgsm_rs" for r in _metrics(metrics.parent))

    kill_when("experiments.fgsm_mnist", TWO_METHODS + ["--out", str(out)],
              fgsm_rs_has_trained_an_epoch)
    experiment.main(TWO_METHODS + ["--out", str(out), "--resume"])
    assert _metrics(out) == _metrics(straight) and _summary(out) == _summary(straight)
    tensorboard_holds(out / "tensorboard", _metrics(out), ("method", "seed"), "epoch",
                      ("loss", "clean_accuracy", "guard_pgd_accuracy"))


def test_a_data_dir_is_read_without_naming_its_source(tmp_path):
    from attacks.mnist import SAMPLE_DIR

    assert experiment.ExperimentConfig(data_dir=str(SAMPLE_DIR)).data_source == "idx"
    assert experiment.ExperimentConfig().data_source == "sample"
    experiment.main(["--quick", "--no-progress", "--methods", "clean", "--epochs", "1",
                     "--attacks", "fgsm", "--train-examples", "200", "--data-dir",
                     str(SAMPLE_DIR), "--out", str(tmp_path / "out")])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["data_source"] == "idx" and config["config"]["data_dir"] == str(SAMPLE_DIR)


def test_unreadable_data_fails_before_anything_is_written(tmp_path):
    (tmp_path / "digits").mkdir()
    with pytest.raises(SystemExit, match="no MNIST train images file"):
        experiment.main(["--quick", "--data-dir", str(tmp_path / "digits"),
                         "--out", str(tmp_path / "out")])
    assert [p.name for p in tmp_path.iterdir()] == ["digits"]


@pytest.mark.parametrize("flags, message", [
    (["--methods", "trades"], r"methods\[0\] must be one of"),
    (["--methods", "pgd", "pgd"], "methods must be one or more distinct values"),
    (["--eps", "0"], r"eps must be in \(0\.0, 1\.0\]"),
    (["--epochs", "0"], "epochs must be an integer >= 1"),
    (["--eval-eps", "0.2", "0.1"], "eval_eps must be one or more distinct values, in "
                                   "increasing order"),
    (["--eval-eps", "0.1", "1.5"], r"eval_eps\[1\] must be in \[0\.0, 1\.0\]\. Received: "
                                   r"eval_eps\[1\]=1\.5"),
    # Before the fix NaN passed the order and range checks: 3 minutes of training, then a crash.
    (["--eval-eps", "0", "nan"], r"eval_eps\[1\] must be a finite number in \[0\.0, 1\.0\]\. "
                                 r"Received: eval_eps\[1\]=nan"),
    (["--methods"], r"methods must be one or more distinct values\. Received: methods=\(\)"),
    (["--learning-rate", "inf"], r"learning_rate must be a finite number > 0\. Received: "
                                 r"learning_rate=inf"),
    (["--shift", "-1"], "shift must be an integer >= 0"),
    (["--lr-schedule", "linear"], "lr_schedule must be one of"),
    (["--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["--n-fgsm-noise", "0"], r"n_fgsm_noise must be > 0\. Received"),
    (["--seeds", "1", "1"], "seeds must be one or more distinct values"),
    (["--seeds", "-1"], r"seeds\[0\] must be an integer >= 0"),
    (["--eval-examples", "0"], "eval_examples must be an integer >= 1"),
    (["--worst-case-steps", "0"], "worst_case_steps must be an integer >= 1"),
    (["--worst-case-targeted-steps", "-2"], "worst_case_targeted_steps must be an integer >= 1"),
    (["--attacks", "fgsm", "cw"], r"attacks\[1\] must be one of \('fgsm', 'pgd', 'worst_case'\)"),
    (["--train-examples", "0"], "train_examples must be an integer >= 1"),
])
def test_bad_flags_are_usage_errors_naming_the_argument(flags, message, tmp_path, read_error):
    with pytest.raises(SystemExit) as exit_info:
        experiment.main(QUICK + ["--out", str(tmp_path)] + flags)
    assert exit_info.value.code == 2
    assert re.search(message, read_error())
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("flag, split", [("--train-examples", "8,000 digits of the training"),
                                         ("--eval-examples", "2,000 digits of the test"),
                                         ("--curve-examples", "2,000 digits of the test")])
def test_more_examples_than_the_split_holds_fail_before_anything_is_written(flag, split,
                                                                           tmp_path):
    with pytest.raises(SystemExit, match=f"{flag[2:].replace('-', '_')} must be at most the "
                                         f"{split} split. Received: .*=9000"):
        experiment.main(["--source", "sample", flag, "9000", "--out", str(tmp_path / "out")])
    assert not any(tmp_path.iterdir())


def test_quick_run_writes_tensorboard_runs_matching_the_metrics(quick_run, tensorboard_holds):
    out, _ = quick_run
    tensorboard_holds(out / "tensorboard", out / "metrics.csv", ("method", "seed"), "epoch",
                      ("loss", "clean_accuracy", "guard_pgd_accuracy"))


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy must be one of"):
        experiment.ExperimentConfig(strategy="tpu")
