"""Command lines built from an experiment's frozen config dataclass.

Each field becomes a flag (``total_steps`` -> ``--total-steps``) with the field's default and
its ``metadata["help"]`` as help text, so the dataclass is the single place a setting lives::

    @dataclasses.dataclass(frozen=True)
    class Config:
        lr: float = field(default=0.01, metadata={"help": "learning rate"})

    config = parse_config(Config, description="...")
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing


def _flag_kwargs(field, hint):
    origin = typing.get_origin(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return {"nargs": "+", "type": item}
    if origin in (typing.Union, types.UnionType):  # Optional[int], int | None
        inner = [a for a in typing.get_args(hint) if a is not type(None)][0]
        return {"type": inner}
    return {"type": hint}


def build_parser(config_cls, description: str = "") -> argparse.ArgumentParser:
    """An ``argparse`` parser with one flag per field of ``config_cls``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory())
        kwargs = _flag_kwargs(field, hints[field.name])
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name,
                            default=default, help=field.metadata.get("help", " "), **kwargs)
    return parser


def parse_config(config_cls, argv=None, description: str = ""):
    """Parses ``argv`` (default ``sys.argv[1:]``) into an instance of ``config_cls``.

    Lists from ``nargs="+"`` flags become tuples so the config stays hashable; the
    dataclass's ``__post_init__`` validates values and its ``ValueError`` becomes a usage
    error that names the flag.
    """
    parser = build_parser(config_cls, description)
    args = vars(parser.parse_args(argv))
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    try:
        return config_cls(**args)
    except ValueError as error:
        parser.error(str(error))
