"""The Examples section at the end of each command's `--help` (a typer epilog)."""

from __future__ import annotations

from rich.markup import escape


def examples(*lines: str) -> str:
    """An epilog listing example command lines, one per line, markup escaped.

    >>> print(examples("edgefleet devices list -l 'region=eu'"))
    [bold]Examples[/bold]
      edgefleet devices list -l 'region=eu'
    """
    return "\n".join(["[bold]Examples[/bold]", *(f"  {escape(line)}" for line in lines)])
