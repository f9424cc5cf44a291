"""Rendering for the CLI: rich tables for people, `-o json` for scripts (stable fields).

Strings printed for people show their hidden characters escaped (`\\x1b`, `\\u202e`:
`core.hidden_characters`), so a name, label, inventory field or error message from the
server cannot repaint the terminal or reorder what it shows. JSON output is exact.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgefleet.core.durations import format_duration
from edgefleet.core.hidden_characters import escape_hidden


class VisibleConsole(Console):
    """A console that prints every string with its hidden characters escaped (line breaks
    and tabs of multi-line messages stay)."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(escape_hidden(text, keep="\n\t"), **kwargs)


console = VisibleConsole()
error_console = VisibleConsole(stderr=True, soft_wrap=True)


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[dict[str, Any]], Any]
    style: str | None = None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def ago(timestamp: str | None, now: datetime | None = None) -> str:
    """`12s ago` from an ISO 8601 timestamp, `never` for None."""
    if not timestamp:
        return "never"
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0.0, ((now or datetime.now(UTC)) - moment).total_seconds())
    return f"{format_duration(seconds)} ago"


def format_labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def emit_list(rows: Sequence[dict[str, Any]], output: Output, columns: Sequence[Column]) -> None:
    if output is Output.JSON:
        print_json(list(rows))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column.header, style=column.style, overflow="fold")
    for row in rows:
        table.add_row(*(escape_hidden(str(column.value(row))) for column in columns))
    console.print(table)
    if not rows:
        console.print("[dim](none)[/dim]")


def emit_object(obj: dict[str, Any], output: Output, fields: Sequence[Column]) -> None:
    if output is Output.JSON:
        print_json(obj)
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for field in fields:
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
