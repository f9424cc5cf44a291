"""`edgefleet workloads ...` and `edgefleet placements ...` (create them with `edgefleet
apply -f workload.yaml`)."""

from __future__ import annotations

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
    emit_object,
    format_time,
    styled,
)
from edgefleet.errors import InvalidInput

workloads_app = typer.Typer(
    help="Workloads: processes serving models, placed on devices, failed over and migrated.",
    no_args_is_help=True,
)
placements_app = typer.Typer(help="Where each replica runs and why.", no_args_is_help=True)


def _where(w: dict[str, Any]) -> str:
    parts = []
    for p in w["placement"]:
        node = p["node"] or p["node_id"] or "-"
        state = p["state"] or p["action"] or "?"
        parts.append(f"{p['replica']}:{node}({state})")
    return " ".join(parts) or "-"


def _migrating(w: dict[str, Any]) -> str:
    return ", ".join(f"{m['replica']}->{m['target_name'] or m['target']} {m['state']} "
                     f"{m['weight_pct']}%" for m in w["migrations"]) or "-"  # fmt: skip


WORKLOAD_COLUMNS = [
    Column("NAME", lambda w: w["name"], "cyan"),
    Column("REPLICAS", lambda w: w["replicas"]),
    Column("PRIORITY", lambda w: w["priority"]),
    Column("RELEASES", lambda w: ",".join(w["releases"]) or "-"),
    Column("PLACED (replica:node(state))", _where),
    Column("MIGRATING", _migrating),
]

PLACEMENT_COLUMNS = [
    Column("REPLICA", lambda p: p["replica"]),
    Column("NODE", lambda p: p["node"] or p["node_id"] or "-", "cyan"),
    Column("GEN", lambda p: p["generation"] if p["generation"] is not None else "-"),
    Column("LIVENESS", lambda p: styled(p["liveness"] or "-")),
    Column("STATE", lambda p: p["state"] or "-"),
    Column("HEALTH", lambda p: p["health"] or "-"),
    Column("ENDPOINT", lambda p: f"{p['address']}:{p['port']}" if p["port"] else "-"),
    Column("DECISION", lambda p: f"{p['action'] or '-'}: {p['reason']}"),
]

MIGRATION_COLUMNS = [
    Column("ID", lambda m: m["id"], "cyan"),
    Column("REPLICA", lambda m: m["replica"]),
    Column("FROM", lambda m: m["source_name"] or m["source"]),
    Column("TO", lambda m: m["target_name"] or m["target"]),
    Column("TRIGGER", lambda m: m["trigger"]),
    Column("STATE", lambda m: m["state"]),
    Column("TRAFFIC", lambda m: f"{m['weight_pct']}%"),
    Column("LAST STEP", lambda m: m["steps"][-1]["detail"] if m["steps"] else m["reason"]),
]


@workloads_app.command("list")
def list_workloads(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List workloads with where each replica runs."""
    with ctx.obj.client() as client:
        emit_list(client.list_workloads(), output, WORKLOAD_COLUMNS)


@workloads_app.command("show")
def show_workload(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Show a workload: its spec, where its replicas run, their status, migrations."""
    with ctx.obj.client() as client:
        workload = client.get_workload(name)
    if output.is_document or output is Output.NAME:
        emit_object(workload, output, [])
        return
    emit_object(workload, output, [
        Column("NAME", lambda w: w["name"]),
        Column("REPLICAS", lambda w: w["replicas"]),
        Column("PRIORITY", lambda w: w["priority"]),
        Column("STATEFUL", lambda w: "yes" if w["stateful"] else "no"),
        Column("RELEASES", lambda w: ",".join(w["releases"]) or "-"),
        Column("UPDATED", lambda w: f"{format_time(w['updated_at'])} by {w['updated_by']}"),
    ])  # fmt: skip
    console.print("\n[bold]Placement[/bold]")
    emit_list(workload["placement"], output, PLACEMENT_COLUMNS)
    if workload["migrations"]:
        console.print("\n[bold]Migrations in progress[/bold]")
        emit_list(workload["migrations"], output, MIGRATION_COLUMNS)


@workloads_app.command("delete")
def delete_workload(ctx: typer.Context, name: str) -> None:
    """Delete a workload; its replicas are stopped."""
    with ctx.obj.client() as client:
        client.delete_workload(name)
    console.print(f"workload {name} deleted")


@workloads_app.command("migrate")
def migrate(
    ctx: typer.Context,
    name: str,
    to: str = typer.Option(None, "--to", help="Target device (id or name)"),
    selector: str = typer.Option(
        None, "--selector", "-l", help="Or: the best node matching this label selector"
    ),
    replica: int = typer.Option(0, "--replica", help="Which replica"),
    abort: bool = typer.Option(
        False, "--abort", help="Abort the workload's migrations (back to the sources)"
    ),
    output: Output = OutputOpt,
) -> None:
    """Migrate a replica (planned: pre-stage, move its state, shift traffic, drain the
    source), or abort the workload's migrations with --abort."""
    given = sum(x is not None and x is not False for x in (to, selector, abort or None))
    if given != 1:
        raise InvalidInput("give exactly one of --to NODE, --selector S or --abort")
    with ctx.obj.client() as client:
        if abort:
            emit_list(client.abort_migrations(name), output, MIGRATION_COLUMNS)
            return
        migration = client.migrate_workload(name, replica, to, selector)
    if output.is_document or output is Output.NAME:
        emit_object(migration, output, [])
        return
    source = migration["source_name"] or migration["source"]
    target = migration["target_name"] or migration["target"]
    console.print(
        f"migration {migration['id']} of {name}[{replica}] queued: {source} -> {target}",
        highlight=False,
    )
    console.print(f"follow it with: edgefleet workloads migrations {name}", highlight=False)


@workloads_app.command("migrations")
def migrations(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """A workload's migrations (newest first), each with its last reported step."""
    with ctx.obj.client() as client:
        found = client.workload_migrations(name)
    emit_list(found, output, MIGRATION_COLUMNS)
    if output is not Output.TABLE and output is not Output.WIDE:
        return
    for m in found[:1]:
        console.print(f"\n[bold]Steps of {m['id']}[/bold]")
        for step in m["steps"]:
            console.print(
                f"  {format_time(step['at'])}  {step['state']:<13} "
                f"{step['weight_pct']:>3}%  {step['detail']}",
                highlight=False,
            )


@workloads_app.command("endpoints")
def endpoints(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """The workload's service endpoints and their traffic weights."""
    with ctx.obj.client() as client:
        found = client.service_endpoints(name)
    emit_list(found["endpoints"], output, [
        Column("REPLICA", lambda e: e["replica"]),
        Column("NODE", lambda e: e["node"] or e["node_id"], "cyan"),
        Column("URL", lambda e: e["url"]),
        Column("WEIGHT", lambda e: e["weight"]),
        Column("ROLE", lambda e: e["role"]),
        Column("HEALTHY", lambda e: "yes" if e["healthy"] else "no"),
    ])  # fmt: skip


@placements_app.command("nodes")
def nodes(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """Nodes as placement sees them: liveness (phi accrual), reliability, power, drain."""
    with ctx.obj.client() as client:
        found = client.list_nodes()
    emit_list(found, output, [
        Column("NAME", lambda n: n["name"], "cyan"),
        Column("REGION/ZONE", lambda n: f"{n['region']}/{n['zone']}"),
        Column("RESIDENCY", lambda n: n["residency"] or "-"),
        Column("LIVENESS", lambda n: styled(n["liveness"])),
        Column("PHI", lambda n: f"{n['phi']:.2f}"),
        Column("RELIABILITY", lambda n: f"{n['reliability']:.3f}"),
        Column("POWER", lambda n: n["power_source"] + (
            f" {n['battery_pct']:.0f}%" if n["battery_pct"] is not None else "")),
        Column("DRAIN", lambda n: n["drain_reason"] if n["draining"] else "-"),
        Column("REPLICAS", lambda n: n["replicas"]),
    ])  # fmt: skip


@placements_app.command("show")
def show_placement(ctx: typer.Context, workload: str, output: Output = OutputOpt) -> None:
    """Where each replica of WORKLOAD is placed, at which generation, and why."""
    with ctx.obj.client() as client:
        placement = client.placement(workload)
    if output.is_document:
        emit_document(placement, output)
        return
    emit_list(
        placement["placement"],
        output,
        PLACEMENT_COLUMNS,
        name=lambda p: p["node"] or p["node_id"] or "-",
    )


def _terms(row: dict[str, Any]) -> str:
    terms = row["terms"]
    if not terms:
        return "-"
    return " ".join(f"{k[:4]}={v:+.2f}" for k, v in terms.items() if abs(v) > 1e-9) or "0"


@placements_app.command("explain")
def explain(ctx: typer.Context, workload: str, output: Output = OutputOpt) -> None:
    """Each candidate node's score terms for each replica: why it won, lost or was
    excluded (naming the failing constraint)."""
    with ctx.obj.client() as client:
        result = client.explain_placement(workload)
    if output.is_document:
        emit_document(result, output)
        return
    for decision in result["decisions"]:
        console.print(
            f"[bold]replica {decision['replica']}[/bold]: {decision['action']}: "
            f"{decision['reason']}",
            highlight=False,
        )
    for round_ in result["replicas"]:
        label = "?" if round_["replica"] is None else round_["replica"]
        console.print(f"\n[bold]Candidates for replica {label}[/bold]")
        emit_list(round_["candidates"], output, [
            Column("NODE", lambda c: c["node"] or c["node_id"], "cyan"),
            Column("TOTAL", lambda c: "-" if c["total"] is None else f"{c['total']:.2f}"),
            Column("TERMS", _terms),
            Column("OUTCOME", lambda c: c["outcome"] if not c["excluded_by"]
                   else f"excluded: {c['excluded_by']}"),
        ])  # fmt: skip


describe(workloads_app, {
    "list": ["edgefleet workloads list"],
    "show": ["edgefleet workloads show detector"],
    "delete": ["edgefleet workloads delete detector"],
    "migrate": ["edgefleet workloads migrate detector --to cam-2",
                "edgefleet workloads migrate detector -l zone=b --replica 1",
                "edgefleet workloads migrate detector --abort"],
    "migrations": ["edgefleet workloads migrations detector"],
    "endpoints": ["edgefleet workloads endpoints detector -o json"],
})  # fmt: skip
describe(placements_app, {
    "nodes": ["edgefleet placements nodes", "edgefleet placements nodes -o name"],
    "show": ["edgefleet placements show detector"],
    "explain": ["edgefleet placements explain detector"],
})  # fmt: skip
