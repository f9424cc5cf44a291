"""How commands read in `--help`: metavars that are words (`SINCE`, `FILE`, `DEVICE...`,
not `<str>` or `<list[str]>`) and an Examples section at the end of each command.

`describe` names the parameters of a sub-app's commands from their annotations;
`use_word_metavars` then gives every parameter of the whole command tree still without one
(callbacks' options, `--help`, flags) a word from its annotation, drops the type column
typer prints beside every argument, and moves a number's bounds into its help, so that at
80 columns no option name is cut.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path

import typer
from rich.markup import escape
from typer import _click as click  # typer (0.29) runs on a click of its own
from typer.core import TyperArgument, TyperOption
from typer.models import ArgumentInfo, OptionInfo


def examples(*lines: str) -> str:
    """An epilog listing example command lines, one per line, markup escaped.

    >>> print(examples("edgefleet devices list -l 'region=eu'"))
    [bold]Examples[/bold]
      edgefleet devices list -l 'region=eu'
    """
    return "\n".join(["[bold]Examples[/bold]", *(f"  {escape(line)}" for line in lines)])


# A longer name shows as VALUE: at 80 columns, the help of a command with long option names
# (`rollouts create --max-latency-increase`) would otherwise cut those names.
LONGEST_NAME_METAVAR = 10


def metavar_for(name: str, annotation: object) -> str | None:
    """The word shown for a parameter: FILE for paths, N for counts, the name otherwise, or
    VALUE for a long name (None: leave typer's own, e.g. the choices of an enum or a flag).
    Typer adds `...` to an argument that takes several.

    >>> metavar_for("since", str), metavar_for("key", list[Path]), metavar_for("max_uses", int)
    ('SINCE', 'FILE', 'N')
    >>> metavar_for("max_latency_increase", float)
    'VALUE'
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
        word = name.strip("_").upper().replace("_", "-")
        return word if len(word) <= LONGEST_NAME_METAVAR else "VALUE"
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


class WordArgument(TyperArgument):
    """An argument shown by its metavar alone: typer (0.29) prints its type (`<str>`,
    `<list[str]>`) beside it even when a metavar names it."""

    def display_type_rich(self, ctx: click.Context) -> str | None:
        return None


class RangeInHelpOption(TyperOption):
    """An option whose bounds (`[x>=0.1]`) end its help, where lines wrap, not its type
    column: there, at 80 columns, they squeezed long option names until rich cut them."""

    def _get_number_range_help_str(self) -> str | None:
        return None


def use_word_metavars(command: click.Command) -> None:
    """Give every parameter of `command` and its subcommands without a metavar the word
    `metavar_for` picks from its annotation (none for a flag; an option's choices keep
    typer's `<a|b>`, an argument's are named); show arguments without a type column and
    the bounds of a number at the end of its help."""
    context = click.Context(command, **command.context_settings)
    for param in [*command.params, command.get_help_option(context)]:
        descriptor = getattr(param, "type_descriptor", None)
        if param is None or descriptor is None:
            continue
        if param.metavar is None:
            word = metavar_for(param.name or "", descriptor.annotation)
            if descriptor.annotation is bool:
                param.metavar = ""
            elif isinstance(param, TyperArgument):
                param.metavar = (word or (param.name or "").upper()) + (
                    "..." if param.nargs != 1 else "")  # fmt: skip
            elif word is not None:
                param.metavar = word
        if isinstance(param, TyperArgument):
            param.__class__ = WordArgument
        elif isinstance(param, TyperOption) and (bounds := param._get_number_range_help_str()):
            param.help = f"{param.help or ''} {escape(f'[{bounds}]')}".lstrip()
            param.__class__ = RangeInHelpOption
    for subcommand in getattr(command, "commands", {}).values():
        use_word_metavars(subcommand)
