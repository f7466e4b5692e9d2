"""``cxrdecomp train METHOD``: one subcommand per trainable method, generated from its options dataclass.

Each field of the method's ``Options`` (:class:`cxrdecomp.train.TrainOptions` subclass) becomes an option:
``batch_size`` → ``--batch-size``, a ``bool`` → ``--x/--no-x``, help text from ``option(..., help)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Optional, Union

import typer

from cxrdecomp import methods
from cxrdecomp.cli.app import train_app

_CLI_TYPES = (bool, int, float, str, Path)


def _cli_type(tp: Any) -> Any:
    """``X`` or ``Optional[X]`` with X a type the CLI can parse, else ``TypeError``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and inner[0] in _CLI_TYPES:
            return Optional[inner[0]]
    if tp in _CLI_TYPES:
        return tp
    raise TypeError(f"option type {tp!r} cannot be given on the command line; use one of {_CLI_TYPES} or Optional of one")


def _parameters(cls: type) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        tp = _cli_type(hints[f.name])
        decls = [f"{flag}/--no-{f.name.replace('_', '-')}"] if tp is bool else [flag]
        if f.metadata.get("flag"):
            decls.append(f.metadata["flag"])
        opt = typer.Option(default, *decls, help=f.metadata.get("help", ""), show_default=default is not None)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=tp))
    return params


def _command(name: str):
    spec = methods.get(name)
    cls = methods.train_options(name)

    def command(**kwargs) -> None:
        folder = methods.trainer(name)(cls(**kwargs))
        typer.echo(f"model exported to {folder}")

    command.__signature__ = inspect.Signature(_parameters(cls))  # type: ignore[attr-defined]
    command.__name__ = f"train_{name}"
    command.__doc__ = f"Train {spec.title}.\n\n{inspect.cleandoc(cls.__doc__ or '')}"
    return command


for _name in methods.trainable():
    train_app.command(_name)(_command(_name))
