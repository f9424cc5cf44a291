"""Rendering for the CLI: tables for people, documents for scripts.

`-o` picks the form, the same on every list and show command (kubectl's set):

- `table` (default): the columns that matter; `wide`: more columns;
- `name`: one identifier per line (the name, or the id of what has none);
- `json`: the API's document (stable field names); `yaml`: the same document as YAML.

Off a terminal (a pipe, a file) nothing is wrapped or cut: a table row is one line however
long, so `grep` and `awk` see whole ids and labels. On a terminal long cells fold.

Times are shown one way everywhere: UTC with a `Z` (`2026-07-01 02:00:00Z`), or local time
with its zone when `EDGEFLEET_TIME=local`.

Strings printed for people show their hidden characters escaped (`\\x1b`, `\\u202e`:
`core.hidden_characters`), so a name, label, inventory field or error message from the
server cannot repaint the terminal or reorder what it shows. JSON and YAML are exact.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from edgefleet.core.durations import format_duration
from edgefleet.core.hidden_characters import escape_hidden
from edgefleet.errors import EdgefleetError, SettingsError

# Wide enough for any row: off a terminal a line is never wrapped.
UNLIMITED_WIDTH = 1_000_000
TIME_SETTING = "EDGEFLEET_TIME"


class VisibleConsole(Console):
    """A console that prints every string with its hidden characters escaped (line breaks
    and tabs of multi-line messages stay). Off a terminal its lines are never wrapped."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.is_terminal:
            self.width = UNLIMITED_WIDTH

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(escape_hidden(text, keep="\n\t"), **kwargs)


console = VisibleConsole()
error_console = VisibleConsole(stderr=True, soft_wrap=True)


class Output(StrEnum):
    TABLE = "table"
    WIDE = "wide"
    NAME = "name"
    JSON = "json"
    YAML = "yaml"

    @property
    def is_document(self) -> bool:
        """JSON or YAML: the API's document, for scripts."""
        return self in (Output.JSON, Output.YAML)


OUTPUT_HELP = "table, wide (more columns), name (one per line), json or yaml"
OutputOpt: Any = typer.Option(Output.TABLE, "--output", "-o", metavar="FORMAT", help=OUTPUT_HELP)


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[dict[str, Any]], Any]
    style: str | None = None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def print_yaml(data: Any) -> None:
    sys.stdout.write(yaml.safe_dump(data, sort_keys=True, allow_unicode=True))


def emit_document(data: Any, output: Output) -> None:
    """`data` as JSON or YAML (`output.is_document`)."""
    if output is Output.YAML:
        print_yaml(data)
    else:
        print_json(data)


def identifier(row: dict[str, Any]) -> str:
    """What `-o name` prints for a row: its name, else its id."""
    return str(row.get("name") or row.get("id") or "")


def print_error(error: EdgefleetError) -> None:
    """The one line on stderr that ends a failed command."""
    # The message may quote what the server stored or was sent: text, never markup.
    error_console.print(
        f"[red]error:[/red] {escape(error.message)} [dim]({escape(error.code)})[/dim]",
        highlight=False,
    )


def print_names(names: Sequence[str]) -> None:
    sys.stdout.writelines(f"{escape_hidden(n)}\n" for n in names)


def _moment(timestamp: str) -> datetime:
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def shows_local_time() -> bool:
    """EDGEFLEET_TIME: `utc` (default) or `local`."""
    value = os.environ.get(TIME_SETTING, "utc").strip().lower()
    if value not in ("utc", "local"):
        raise SettingsError(f"{TIME_SETTING}={value!r}: expected utc or local")
    return value == "local"


def format_time(timestamp: str | datetime | None, missing: str = "-") -> str:
    """A time as people read it here: `2026-07-01 02:00:00Z`, or with EDGEFLEET_TIME=local
    the local time and its zone (`2026-07-01 04:00:00 CEST`)."""
    if not timestamp:
        return missing
    moment = _moment(timestamp) if isinstance(timestamp, str) else timestamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if shows_local_time():
        local = moment.astimezone()
        return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def ago(timestamp: str | None, now: datetime | None = None) -> str:
    """`12s ago` from an ISO 8601 timestamp, `never` for None."""
    if not timestamp:
        return "never"
    seconds = max(0.0, ((now or datetime.now(UTC)) - _moment(timestamp)).total_seconds())
    return f"{format_duration(seconds)} ago"


def format_labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def new_table(**kwargs: Any) -> Table:
    """A borderless table; off a terminal its cells never wrap or get cut."""
    return Table(box=None, header_style="bold", pad_edge=False, **kwargs)


def add_column(table: Table, header: str, **kwargs: Any) -> None:
    wraps = console.is_terminal
    table.add_column(header, overflow="fold" if wraps else "ignore", no_wrap=not wraps,
                     **kwargs)  # fmt: skip


def emit_list(
    rows: Sequence[dict[str, Any]],
    output: Output,
    columns: Sequence[Column],
    *,
    wide: Sequence[Column] = (),
    name: Callable[[dict[str, Any]], str] = identifier,
) -> None:
    """Rows as a table (`wide`: with the `wide` columns too), names or a document."""
    if output.is_document:
        emit_document(list(rows), output)
        return
    if output is Output.NAME:
        print_names([name(r) for r in rows])
        return
    shown = [*columns, *wide] if output is Output.WIDE else list(columns)
    table = new_table()
    for column in shown:
        add_column(table, column.header, style=column.style)
    for row in rows:
        table.add_row(*(escape_hidden(str(column.value(row))) for column in shown))
    console.print(table)
    if not rows:
        console.print("[dim](none)[/dim]")


def emit_object(
    obj: dict[str, Any],
    output: Output,
    fields: Sequence[Column],
    *,
    wide: Sequence[Column] = (),
    name: Callable[[dict[str, Any]], str] = identifier,
) -> None:
    """One object as `field value` lines, its name or a document."""
    if output.is_document:
        emit_document(obj, output)
        return
    if output is Output.NAME:
        print_names([name(obj)])
        return
    table = new_table(show_header=False)
    add_column(table, "", style="bold")
    add_column(table, "")
    for field in [*fields, *wide] if output is Output.WIDE else fields:
        table.add_row(field.header, escape_hidden(str(field.value(obj))))
    console.print(table)


STATUS_STYLE = {
    "online": "green",
    "stale": "yellow",
    "offline": "red",
    "approved": "green",
    "pending": "yellow",
    "rejected": "red",
    "revoked": "red",
    "installed": "green",
    "failed": "red",
    "rolled-back": "red",
    "staged": "cyan",
}


def styled(value: str) -> str:
    style = STATUS_STYLE.get(value)
    return f"[{style}]{value}[/{style}]" if style else value
