"""How commands read in `--help`: metavars that are words (`SINCE`, `FILE`, `DEVICE...`,
not `<str>` or `<list[str]>`) and an Examples section at the end of each command."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape
from typer.models import ArgumentInfo, OptionInfo


def examples(*lines: str) -> str:
    """An epilog listing example command lines, one per line, markup escaped.

    >>> print(examples("edgefleet devices list -l 'region=eu'"))
    [bold]Examples[/bold]
      edgefleet devices list -l 'region=eu'
    """
    return "\n".join(["[bold]Examples[/bold]", *(f"  {escape(line)}" for line in lines)])


def metavar_for(name: str, annotation: object) -> str | None:
    """The word shown for a parameter: FILE for paths, N for counts, the name otherwise
    (None: leave typer's own, e.g. the choices of an enum or a flag). Typer adds `...` to
    an argument that takes several.

    >>> metavar_for("since", str), metavar_for("key", list[Path]), metavar_for("max_uses", int)
    ('SINCE', 'FILE', 'N')
    """
    many = typing.get_origin(annotation) is list
    inner = typing.get_args(annotation)[0] if many else annotation
    if inner is bool or (isinstance(inner, type) and issubclass(inner, Enum)):
        return None
    if inner is Path:
        word = "DIR" if "dir" in name else "FILE"
    elif inner is int:
        word = "N"
    else:
        return name.strip("_").upper().replace("_", "-")
    return word


def describe(app: typer.Typer, epilogs: Mapping[str, Sequence[str]]) -> None:
    """Give every command of `app` word metavars, and the examples `epilogs` lists for it
    (by command name)."""
    for command in app.registered_commands:
        if command.callback is None:
            continue
        hints = typing.get_type_hints(command.callback)
        signature = inspect.signature(command.callback)
        parameters = []
        for name, parameter in signature.parameters.items():
            info = parameter.default
            if info is inspect.Parameter.empty and hints.get(name) is not typer.Context:
                # A bare positional parameter: typer would show `{name}` and `<str>`.
                info = typer.Argument(..., metavar=metavar_for(name, hints.get(name)))
                parameter = parameter.replace(default=info)
            elif isinstance(info, OptionInfo | ArgumentInfo) and info.metavar is None:
                info.metavar = metavar_for(name, hints.get(name))
            parameters.append(parameter)
        command.callback.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=parameters
        )
        lines = epilogs.get(command.name or "")
        if lines and command.epilog is None:
            command.epilog = examples(*lines)
