"""Every float setting of every config refuses NaN and +/-inf with an error naming it.

A non-finite hyperparameter is accepted by a comparison such as ``lr > 0`` or ``eps <= 1``
(inf passes one, NaN fails none of the ``if bad: raise`` forms), and a run then trains to exit 0
with NaN losses. The configs are found by introspection: every frozen dataclass in ``agents``,
``attacks``, ``lab`` and ``experiments`` (CONVENTIONS: configuration is a frozen dataclass),
and in each every field typed ``float``, ``float | None`` or ``tuple[float, ...]``; so a new
float field without a check fails here.
"""

import dataclasses
import importlib
import math
import pkgutil
import types
import typing

import pytest

PACKAGES = ("agents", "attacks", "lab", "experiments")

# Arguments for the configs with float fields but no defaults for every field.
REQUIRED = {
    "lab.transforms.ClipByValue": {"lo": -1.0, "hi": 1.0},
    "lab.transforms.ClipByNorm": {"max_norm": 1.0},
    "lab.transforms.ClipByGlobalNorm": {"max_norm": 1.0},
    "lab.regularizers.InputGradientPenalty": {"loss_fn": lambda y, outputs: outputs},
    "lab.regularizers.GradientAlignmentPenalty": {
        "loss_fn": lambda y, outputs: outputs, "scale": 1.0, "radius": 0.1,
        "seed": lambda: (0, 0)},
}
# Fields where an infinite value means something (one side of a clip left unbounded): only
# NaN must be refused there (tests/lab/test_transforms.py checks that inf works).
ACCEPTS_INF = {"lab.transforms.ClipByValue.lo", "lab.transforms.ClipByValue.hi"}
NON_FINITE = (math.nan, math.inf, -math.inf)


def _configs():
    """Every frozen dataclass defined in the packages, by ``module.QualName``."""
    found = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        names = [package_name] + [info.name for info in pkgutil.walk_packages(
            package.__path__, f"{package_name}.") if not info.name.endswith("__main__")]
        for name in names:
            module = importlib.import_module(name)
            for value in vars(module).values():
                if (isinstance(value, type) and dataclasses.is_dataclass(value)
                        and value.__module__ == name and value.__dataclass_params__.frozen):
                    found[f"{name}.{value.__qualname__}"] = value
    return found


def _float_kind(hint):
    """``"float"``, ``"optional"`` or ``"tuple"`` for the float types of a field, else None."""
    if hint is float:
        return "float"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and set(args) == {float, type(None)}:
        return "optional"
    if origin is tuple and args in ((float, ...), (float,)):
        return "tuple"
    return None


def _float_fields():
    cases = []
    for name, cls in _configs().items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kind = _float_kind(hints[field.name])
            if kind is not None:
                cases.append((name, cls, field, kind))
    return cases


CASES = _float_fields()


def test_the_sweep_finds_the_configs_and_their_float_fields():
    found = {f"{name}.{field.name}" for name, _, field, _ in CASES}
    # A sample of each kind, so that a broken discovery cannot pass by finding nothing.
    assert {"agents.reinforce.ReinforceConfig.learning_rate",
            "agents.reinforce.ReinforceConfig.max_grad_norm",
            "attacks.adversarial_training.AdversarialTrainingConfig.eps",
            "experiments.fgsm_mnist.ExperimentConfig.eval_eps",
            "experiments.fgsm_mnist.ExperimentConfig.learning_rate",
            "experiments.policy_attacks.ExperimentConfig.eps_values",
            "lab.transforms.AdaptiveClip.eps"} <= found
    assert ACCEPTS_INF <= found  # no stale entries


def _with(field, kind, bad):
    """The field's value with ``bad`` in it: ``bad`` itself, or appended to the default."""
    if kind != "tuple":
        return bad
    default = field.default if field.default is not dataclasses.MISSING else ()
    return (*default, bad)


def _params():
    params = []
    for name, cls, field, kind in CASES:
        key = f"{name}.{field.name}"
        for bad in NON_FINITE:
            if key not in ACCEPTS_INF or math.isnan(bad):
                params.append(pytest.param(cls, field, kind, bad, id=f"{key}={bad}"))
    return params


@pytest.mark.parametrize("cls, field, kind, bad", _params())
def test_non_finite_float_settings_are_refused_naming_the_field(cls, field, kind, bad):
    name = f"{cls.__module__}.{cls.__qualname__}"
    arguments = {**REQUIRED.get(name, {}), field.name: _with(field, kind, bad)}
    with pytest.raises(ValueError) as error:
        cls(**arguments)
    assert field.name in str(error.value)


def _command_line_float_fields(cls, exclude=()):
    """``(field, kind)`` for the float fields that are flags of ``cls``'s command line: nested
    configs are flattened into it, less their ``cli_exclude`` fields (``experiments.cli``)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            yield from _command_line_float_fields(hint, field.metadata.get("cli_exclude", ()))
        elif _float_kind(hint) is not None and field.name not in exclude:
            yield field, _float_kind(hint)


def _experiment_float_flags():
    """``(config class, field name, flag values)`` for every float flag of every experiment's
    command line, the agent's flags included."""
    from experiments.__main__ import EXPERIMENTS

    configs = _configs()
    flags = []
    for experiment in EXPERIMENTS:
        config_cls = next(cls for key, cls in configs.items()
                          if key.startswith(f"experiments.{experiment}.")
                          and key.endswith("Config"))
        for field, kind in _command_line_float_fields(config_cls):
            values = ([str(v) for v in field.default or ()] + ["nan"] if kind == "tuple"
                      else ["inf"])
            flags.append(pytest.param(config_cls, field.name, values,
                                      id=f"{experiment}--{field.name}"))
    return flags


@pytest.mark.parametrize("config_cls, field_name, values", _experiment_float_flags())
def test_a_non_finite_float_flag_is_a_usage_error_naming_the_field(config_cls, field_name,
                                                                   values, read_error):
    # `python -m experiments.reinforce --learning-rate inf` and the like: exit status 2 and the
    # field's name, before anything runs (parse_config turns __post_init__'s ValueError into a
    # usage error).
    from experiments.cli import parse_config

    with pytest.raises(SystemExit) as exit_info:
        parse_config(config_cls, [f"--{field_name.replace('_', '-')}", *values])
    assert exit_info.value.code == 2
    error = read_error()
    assert f"{field_name} must be" in error or f"{field_name}[" in error, error
