"""`edgefleet audit list|verify`: read the audit trail and check its hash chain locally."""

from __future__ import annotations

import json
from typing import Any

import typer

from edgefleet.cli.help_text import describe
from edgefleet.cli.output import (
    Column,
    Output,
    OutputOpt,
    console,
    emit_document,
    emit_list,
    format_time,
    print_names,
)
from edgefleet.errors import EdgefleetError, InvalidInput
from edgefleet.security.audit import AuditRecord, ChainVerifier

app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)

PAGE = 1000


class ChainBroken(EdgefleetError):
    code = "audit_chain_broken"


def _details(details: dict[str, Any]) -> str:
    """`from=pending to=approved`: compact, one line per record."""
    return " ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, sort_keys=True)}"
        for k, v in sorted(details.items())
        if v not in (None, [], {})
    )


COLUMNS = [
    Column("SEQ", lambda r: r["seq"], "cyan"),
    Column("TIME", lambda r: format_time(r["at"])),
    Column("ACTOR", lambda r: r["actor"]),
    Column("ACTION", lambda r: r["action"], "bold"),
    Column("TARGET", lambda r: r["target"]),
    Column("DETAILS", lambda r: _details(r["details"])),
    Column("REQUEST", lambda r: r["request_id"][:12]),
]
WIDE_COLUMNS = [
    Column("REQUEST ID", lambda r: r["request_id"]),
    Column("HASH", lambda r: r["hash"]),
]


@app.command("list")
def list_records(
    ctx: typer.Context,
    limit: int = typer.Option(20, min=1, max=1000, help="How many of the newest records"),
    output: Output = OutputOpt,
) -> None:
    """Show the newest audit records (oldest first); `-o name` prints their sequence
    numbers."""
    with ctx.obj.client() as client:
        emit_list(
            client.audit_tail(limit),
            output,
            COLUMNS,
            wide=WIDE_COLUMNS,
            name=lambda r: str(r["seq"]),
        )


def _record(raw: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        seq=raw["seq"],
        at=raw["at"],
        actor=raw["actor"],
        action=raw["action"],
        target=raw["target"],
        request_id=raw["request_id"],
        details=raw["details"],
        prev_hash=raw["prev_hash"],
        hash=raw["hash"],
    )


def _anchor(text: str | None) -> tuple[int, str] | None:
    if not text:
        return None
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise InvalidInput(f"--anchor must be SEQ:SHA256 (from an earlier verify), got {text!r}")
    return int(seq), digest.lower()


@app.command("verify")
def verify(
    ctx: typer.Context,
    anchor: str = typer.Option(
        None, help="SEQ:HASH printed by an earlier verify; catches a truncated or rewritten log"
    ),
    output: Output = OutputOpt,
) -> None:
    """Fetch the whole chain and verify every link here, on this machine."""
    verifier = ChainVerifier(anchor=_anchor(anchor))
    with ctx.obj.client() as client:
        after = 0
        while True:
            page = client.audit_page(after, PAGE)
            for raw in page:
                verifier.feed(_record(raw))
            if len(page) < PAGE or verifier.problem:
                break
            after = page[-1]["seq"]
    verifier.finish()
    result = {
        "ok": verifier.ok,
        "records": verifier.count,
        "head": f"{verifier.head_seq}:{verifier.head_hash}",
        "problem": verifier.problem,
        "broken_at": verifier.broken_seq,
    }
    if output.is_document:
        emit_document(result, output)
    elif output is Output.NAME:
        print_names([str(result["head"])])
    elif verifier.ok:
        console.print(f"[green]audit chain OK[/green]: {verifier.count} records")
        console.print(f"anchor for next time: {result['head']}")
    if not verifier.ok:
        raise ChainBroken(f"audit chain broken: {verifier.problem}")


describe(app, {
    "list": ["edgefleet audit list --limit 50", "edgefleet audit list -o json | jq '.[].action'"],
    "verify": ["edgefleet audit verify", "edgefleet audit verify --anchor 120:ab12..."],
})  # fmt: skip
