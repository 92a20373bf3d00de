import dataclasses

import pytest

from experiments.cli import parse_config


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = dataclasses.field(default=100, metadata={"help": "env steps"})
    lr: float = dataclasses.field(default=0.01, metadata={"help": "learning rate"})
    seeds: tuple[int, ...] = (0, 1)
    out: str | None = None
    quick: bool = False

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0. Received: lr={self.lr}")


def test_flags_come_from_fields_with_their_types_and_defaults():
    assert parse_config(Config, []) == Config()
    config = parse_config(Config, ["--total-steps", "5", "--lr", "0.5", "--seeds", "3", "4",
                                   "--out", "x", "--quick"])
    assert config == Config(total_steps=5, lr=0.5, seeds=(3, 4), out="x", quick=True)
    assert parse_config(Config, ["--no-quick"]).quick is False


def test_invalid_values_are_usage_errors_that_name_the_field(read_error):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Config, ["--lr", "-1"])
    assert exit_info.value.code == 2
    assert "lr must be > 0. Received: lr=-1.0" in read_error()
    with pytest.raises(SystemExit):
        parse_config(Config, ["--total-steps", "many"])


@dataclasses.dataclass(frozen=True)
class Outer:
    runs: int = 2
    inner: Config = dataclasses.field(default=Config(), metadata={"cli_exclude": ("seeds",)})


def test_nested_dataclass_fields_become_flags_except_excluded_ones(read_error):
    config = parse_config(Outer, ["--runs", "3", "--lr", "0.2", "--quick"])
    assert config == Outer(runs=3, inner=Config(lr=0.2, quick=True))
    with pytest.raises(SystemExit):
        parse_config(Outer, ["--seeds", "1"])
    assert "Unrecognized options: --seeds" in read_error()
    with pytest.raises(SystemExit):
        parse_config(Outer, ["--lr", "0"])
    assert "lr must be > 0" in read_error()


def test_every_listed_experiment_has_a_main_that_parses_its_defaults():
    import importlib

    from experiments.__main__ import EXPERIMENTS

    for name, argv in EXPERIMENTS.items():
        module = importlib.import_module(f"experiments.{name}")
        config_cls = next(v for k, v in vars(module).items()
                          if k.endswith("Config") and isinstance(v, type)
                          and dataclasses.is_dataclass(v) and v.__module__ == module.__name__)
        assert parse_config(config_cls, argv) is not None
        assert callable(module.main)


@pytest.mark.parametrize("values, increasing, message", [
    ((), False, "x must be one or more distinct values. Received: x=()"),
    ((1.0, 1.0), False, "x must be one or more distinct values"),
    ((0.5, 0.1), True, "x must be one or more distinct values, in increasing order"),
    ((0.1, float("nan")), True, "x[1] must be a finite number > 0"),
])
def test_check_values_rejects_empty_repeated_unordered_or_bad_values(values, increasing,
                                                                     message):
    from experiments.cli import check_values
    from lab.checks import check_positive

    with pytest.raises(ValueError) as error:
        check_values("x", values, check_positive, increasing=increasing)
    assert message in str(error.value)
    check_values("x", (0.1, 0.5), check_positive, increasing=True)
