"""`edgefleet policy ...` (policies as code: apply them with `edgefleet apply -f`) and
`edgefleet changes ...` (trust changes waiting for a second admin)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from edgefleet.cli.apply import read_documents
from edgefleet.cli.help_text import describe
from edgefleet.cli.output import (
    Column,
    Output,
    OutputOpt,
    console,
    emit_document,
    emit_list,
    emit_object,
    format_time,
)
from edgefleet.errors import InvalidInput

app = typer.Typer(help="Policies as code: rules checked before the fleet changes.",
                  no_args_is_help=True)  # fmt: skip
changes_app = typer.Typer(help="Trust changes waiting for a second admin's approval.",
                          no_args_is_help=True)  # fmt: skip

POLICY_COLUMNS = [
    Column("NAME", lambda p: p["name"], "cyan"),
    Column("RULES", lambda p: ", ".join(sorted((p["manifest"].get("spec") or p["manifest"]).keys()
                                               - {"kind", "name", "apiVersion"}))),
    Column("UPDATED BY", lambda p: p["updated_by"]),
    Column("UPDATED", lambda p: format_time(p["updated_at"])),
]  # fmt: skip
CHANGE_COLUMNS = [
    Column("ID", lambda c: c["id"], "cyan"),
    Column("CHANGE", lambda c: c["summary"]),
    Column("STATE", lambda c: c["state"]),
    Column("REQUESTED BY", lambda c: c["requested_by"]),
    Column("APPROVED BY", lambda c: c["decided_by"] or "-"),
]


@app.command("test")
def test(
    ctx: typer.Context,
    filename: str = typer.Option(
        ..., "--filename", "-f", help="YAML manifest file ('-' for stdin)"
    ),
    output: Output = OutputOpt,
) -> None:
    """Evaluate Rollout and Workload manifests against the stored policies, applying
    nothing; exit status 1 when a rule refuses one."""
    text = sys.stdin.read() if filename == "-" else _read(Path(filename))
    documents = read_documents(text, filename)
    results = []
    with ctx.obj.client() as client:
        for doc in documents:
            results.append(client.test_policy(doc))
    if output.is_document:
        emit_document(results, output)
    else:
        for doc, result in zip(documents, results, strict=True):
            name = doc.get("name") or (doc.get("metadata") or {}).get("name") or "-"
            where = f"{str(doc['kind']).lower()}/{name}"
            verdict = "allowed" if result["allowed"] else "refused"
            console.print(f"{where} [bold]{verdict}[/bold] by {result['policies']} "
                          "policy(ies)", highlight=False)  # fmt: skip
            for v in result["violations"]:
                console.print(f"  policy {v['policy']}, rule {v['rule']}: {escape(v['reason'])}",
                              highlight=False)  # fmt: skip
            for reason in result["needs_approval"]:
                console.print(f"  needs a second operator's approval: {escape(reason)}",
                              highlight=False)  # fmt: skip
    if not all(r["allowed"] for r in results):
        raise typer.Exit(1)


@app.command("list")
def list_policies(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """The policies in force."""
    with ctx.obj.client() as client:
        emit_list(client.list_policies(), output, POLICY_COLUMNS)


@app.command("delete")
def delete(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Delete a policy (admin)."""
    with ctx.obj.client() as client:
        emit_object(client.delete_policy(name), output, [Column("DELETED", lambda d: d["deleted"])])


@changes_app.command("list")
def list_changes(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """Trust changes, pending and approved, newest first."""
    with ctx.obj.client() as client:
        emit_list(client.list_changes(), output, CHANGE_COLUMNS)


@changes_app.command("approve")
def approve(ctx: typer.Context, change_id: str, output: Output = OutputOpt) -> None:
    """Approve and apply another admin's trust change (its requester cannot)."""
    with ctx.obj.client() as client:
        result = client.approve_change(change_id)
    if output.is_document or output is Output.NAME:
        emit_object(result, output, CHANGE_COLUMNS)
        return
    console.print(f"{result['summary']}: approved by {result['decided_by']} (requested by "
                  f"{result['requested_by']}); root is v{result['root_version']}",
                  highlight=False)  # fmt: skip


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None


describe(app, {
    "test": ["edgefleet policy test -f rollout.yaml", "edgefleet policy test -f - -o json"],
    "list": ["edgefleet policy list"],
    "delete": ["edgefleet policy delete production"],
})  # fmt: skip
describe(changes_app, {
    "list": ["edgefleet changes list"],
    "approve": ["edgefleet changes approve chg-1a2b3c4d5e6f"],
})  # fmt: skip
