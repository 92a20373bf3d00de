"""Command lines built from an experiment's frozen config dataclass, by ``tyro``.

Each field becomes a flag (``total_steps`` -> ``--total-steps``) with the field's default and
its ``metadata["help"]`` as help text, so the dataclass is the single place a setting lives::

    @dataclasses.dataclass(frozen=True)
    class Config:
        lr: float = field(default=0.01, metadata={"help": "learning rate"})

    config = parse_config(Config, description="...")

A field whose type is itself a dataclass (an agent's config inside an experiment's) has its
fields added as flags too, without a prefix (``--num-envs``, not ``--agent.num-envs``),
except those named in the field's ``metadata["cli_exclude"]`` (fields the experiment sets
itself, such as a per-run seed). Booleans get ``--x/--no-x``, tuples ``--seeds 0 1 2``.

The configs never import tyro: it parses a view of them made here (nested fields marked
``OmitArgPrefixes``, excluded ones ``Suppress``-ed), turned back into the real classes.
"""

from __future__ import annotations

import dataclasses
import sys
import typing

import tyro


def _view(config_cls, exclude=()):
    """A subclass of ``config_cls`` for tyro: nested dataclass fields flattened, the fields
    named in ``exclude`` hidden (they keep their defaults)."""
    hints = typing.get_type_hints(config_cls)
    fields = []
    for field in dataclasses.fields(config_cls):
        hint = hints[field.name]
        if field.name in exclude:
            fields.append((field.name, tyro.conf.Suppress[hint], dataclasses.field(
                default=field.default, default_factory=field.default_factory,
                metadata=field.metadata)))
        elif dataclasses.is_dataclass(hint):
            inner = _view(hint, field.metadata.get("cli_exclude", ()))
            default = _as(inner, field.default if field.default is not dataclasses.MISSING
                          else field.default_factory())
            fields.append((field.name, tyro.conf.OmitArgPrefixes[inner],
                           dataclasses.field(default=default, metadata=field.metadata)))
    if not fields:
        return config_cls
    return dataclasses.make_dataclass(config_cls.__name__, fields, bases=(config_cls,),
                                      frozen=True)


def _as(cls, config):
    """``config`` (a dataclass instance) as an instance of ``cls``, nested fields included:
    between a config class and its view, in either direction."""
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(config, field.name)
        values[field.name] = (_as(typing.get_type_hints(cls)[field.name], value)
                              if dataclasses.is_dataclass(value) else value)
    return cls(**values)


def _prog(config_cls) -> str | None:
    """``python -m experiments.<name>`` for an experiment's config, run as a module or not."""
    module = config_cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    return f"python -m {module}" if module.startswith("experiments.") else None


def parse_config(config_cls, argv=None, description: str = ""):
    """Parses ``argv`` (default ``sys.argv[1:]``) into an instance of ``config_cls``.

    A ``ValueError`` from a dataclass's ``__post_init__`` becomes a usage error (exit code 2)
    that shows its message, which names the field.
    """
    view = _view(config_cls)
    parsed = tyro.cli(view, args=argv, default=_as(view, config_cls()), prog=_prog(config_cls),
                      description=description or None)
    return _as(config_cls, parsed)


def check_values(name, values, check=None, *, increasing=False) -> None:
    """Raises ``ValueError`` unless the tuple flag ``values`` (``--methods``, ``--eval-eps``)
    holds one or more distinct values, in increasing order if ``increasing``, each passing
    ``check(f"{name}[{i}]", value)`` (a ``lab.checks`` function, given first: NaN would pass
    the comparisons)."""
    for i, value in enumerate(values):
        if check is not None:
            check(f"{name}[{i}]", value)
    if not values or len(set(values)) != len(values) or (
            increasing and list(values) != sorted(values)):
        raise ValueError(f"{name} must be one or more distinct values"
                         f"{', in increasing order' if increasing else ''}. "
                         f"Received: {name}={tuple(values)!r}")


def run_command(main) -> None:
    """Runs an experiment's ``main()`` as a command: Ctrl-C ends it with exit status 130 and
    the message ``main`` printed (where its partial run is, how to resume), not a traceback."""
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # 128 + SIGINT, as shells report it
