"""Command lines built from an experiment's frozen config dataclass.

Each field becomes a flag (``total_steps`` -> ``--total-steps``) with the field's default and
its ``metadata["help"]`` as help text, so the dataclass is the single place a setting lives::

    @dataclasses.dataclass(frozen=True)
    class Config:
        lr: float = field(default=0.01, metadata={"help": "learning rate"})

    config = parse_config(Config, description="...")

A field whose type is itself a dataclass (an agent's config inside an experiment's) has its
fields added as flags too, except those named in the field's ``metadata["cli_exclude"]``
(fields the experiment sets itself, such as a per-run seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing


def _flag_kwargs(hint):
    origin = typing.get_origin(hint)
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is tuple:
        return {"nargs": "+", "type": typing.get_args(hint)[0]}
    if origin in (typing.Union, types.UnionType):  # Optional[int], int | None
        inner = [a for a in typing.get_args(hint) if a is not type(None)][0]
        return {"type": inner}
    return {"type": hint}


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()


def _add_flags(parser, config_cls, defaults, exclude=()):
    """Adds a flag per field; returns ``{field_name: nested_dataclass_fields}`` for nesting."""
    hints = typing.get_type_hints(config_cls)
    nested = {}
    for field in dataclasses.fields(config_cls):
        hint = hints[field.name]
        default = getattr(defaults, field.name)
        if field.name in exclude:
            continue
        if dataclasses.is_dataclass(hint):
            group = parser.add_argument_group(f"{field.name} ({hint.__name__})")
            nested[field.name] = (hint, _add_flags(group, hint, default,
                                                   field.metadata.get("cli_exclude", ())))
            continue
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name,
                            default=default, help=field.metadata.get("help", " "),
                            **_flag_kwargs(hint))
    return nested


def _defaults(config_cls):
    """An instance with every field at its default (for nested defaults)."""
    return config_cls(**{f.name: _default(f) for f in dataclasses.fields(config_cls)})


def build_parser(config_cls, description: str = "") -> argparse.ArgumentParser:
    """An ``argparse`` parser with one flag per (nested) field of ``config_cls``."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.set_defaults(_nested=_add_flags(parser, config_cls, _defaults(config_cls)))
    return parser


def _build(config_cls, nested, args, base):
    values = {}
    for field in dataclasses.fields(config_cls):
        if field.name in nested:
            inner_cls, inner_nested = nested[field.name]
            values[field.name] = _build(inner_cls, inner_nested, args,
                                        getattr(base, field.name))
        elif field.name in args:
            value = args[field.name]
            values[field.name] = tuple(value) if isinstance(value, list) else value
        else:  # excluded from the command line: keep the default
            values[field.name] = getattr(base, field.name)
    return config_cls(**values)


def parse_config(config_cls, argv=None, description: str = ""):
    """Parses ``argv`` (default ``sys.argv[1:]``) into an instance of ``config_cls``.

    Lists from ``nargs="+"`` flags become tuples so the config stays hashable; a
    ``ValueError`` from a dataclass's ``__post_init__`` becomes a usage error (exit code 2)
    that names the field.
    """
    parser = build_parser(config_cls, description)
    args = vars(parser.parse_args(argv))
    nested = args.pop("_nested")
    try:
        return _build(config_cls, nested, args, _defaults(config_cls))
    except ValueError as error:
        parser.error(str(error))


def run_command(main) -> None:
    """Runs an experiment's ``main()`` as a command: Ctrl-C ends it with exit status 130 and
    the message ``main`` printed (where its partial run is, how to resume), not a traceback."""
    import sys

    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # 128 + SIGINT, as shells report it
