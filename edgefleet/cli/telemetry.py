"""`edgefleet telemetry ...` (queries, KPIs, ingest status, the fleet policy, sealing) and
`edgefleet alerts list`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
import yaml

from edgefleet.cli.help_text import describe
from edgefleet.cli.output import (
    Column,
    Output,
    OutputOpt,
    add_column,
    ago,
    console,
    emit_document,
    emit_list,
    emit_object,
    format_time,
    new_table,
    print_json,
    print_names,
)
from edgefleet.errors import InvalidInput

app = typer.Typer(
    help="Query device telemetry and manage the fleet telemetry policy.", no_args_is_help=True
)
policy_app = typer.Typer(
    help="The fleet-wide telemetry policy (sampling and detection).", no_args_is_help=True
)
alerts_app = typer.Typer(help="KPI anomalies, drift and cohort outliers.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 24


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value, scaled between the smallest and largest; gaps as spaces.

    >>> sparkline([1, 2, 3, None, 8])
    '▁▂▃ █'
    """
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = high - low
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif span == 0:
            out.append(SPARKS[len(SPARKS) // 2])
        else:
            out.append(SPARKS[round((v - low) / span * (len(SPARKS) - 1))])
    return "".join(out)


def bar(value: float | None, high: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of `value` against `high` (eighth-block resolution)."""
    if value is None or not math.isfinite(value) or high <= 0 or value <= 0:
        return ""
    eighths = round(min(value / high, 1.0) * width * 8)
    return "█" * (eighths // 8) + ("" if eighths % 8 == 0 else " ▏▎▍▌▋▊▉"[eighths % 8])


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.4e}"


def _shown(point: dict[str, Any], quantile: float | None) -> float | None:
    """The value charted: the quantile when asked for (and available), else the mean."""
    if quantile is not None and point.get("quantile") is not None:
        value: float = point["quantile"]
        return value
    mean: float = point["mean"]
    return mean


def _q_label(quantile: float | None) -> str:
    return f"P{quantile * 100:g}" if quantile is not None else "Q"


def _render_series(result: dict[str, Any]) -> None:
    quantile = result["quantile"]
    series = result["series"][0]
    points = series["points"]
    label = f"{_q_label(quantile)}" if quantile is not None else "MEAN"
    console.print(
        f"[bold]{result['metric']}[/bold] on [cyan]{series['device_name']}[/cyan] "
        f"({series['device_id']}), {len(points)} points of {result['step_s']}s"
    )
    values = [_shown(p, quantile) for p in points]
    if values:
        present = [v for v in values if v is not None]
        console.print(
            f"{label}  {sparkline(values)}  [dim]{_num(min(present))} .. {_num(max(present))}[/dim]"
        )
    table = new_table()
    for header in ("TIME", "COUNT", "MEAN", "MIN", "MAX"):
        add_column(table, header, justify="right" if header != "TIME" else "left")
    if quantile is not None:
        add_column(table, _q_label(quantile), justify="right")
    add_column(table, label)
    high = max((v for v in values if v is not None), default=0.0)
    for point, value in zip(points, values, strict=True):
        row = [
            format_time(point["time"]), str(point["count"]), _num(point["mean"]),
            _num(point["min"]), _num(point["max"]),
        ]  # fmt: skip
        if quantile is not None:
            row.append(_num(point.get("quantile")))
        row.append(f"[cyan]{bar(value, high)}[/cyan]")
        table.add_row(*row)
    console.print(table)
    if not points:
        console.print("[dim](no windows in this period)[/dim]")


def _render_devices(result: dict[str, Any]) -> None:
    quantile = result["quantile"]
    console.print(
        f"[bold]{result['metric']}[/bold] on {len(result['series'])} devices, "
        f"step {result['step_s']}s"
    )
    table = new_table()
    for header in ("DEVICE", "NAME", "COUNT", "MEAN", "MIN", "MAX"):
        add_column(table, header)
    if quantile is not None:
        add_column(table, _q_label(quantile))
    add_column(table, "TREND")
    for series in result["series"]:
        summary = series["summary"]
        row = [series["device_id"], series["device_name"]]
        if summary is None:
            row += ["0", "-", "-", "-"] + (["-"] if quantile is not None else []) + [""]
        else:
            row += [
                str(summary["count"]),
                _num(summary["mean"]),
                _num(summary["min"]),
                _num(summary["max"]),
            ]
            if quantile is not None:
                row.append(_num(summary.get("quantile")))
            row.append(sparkline([_shown(p, quantile) for p in series["points"]]))
        table.add_row(*row)
    console.print(table)
    total = result["summary"]
    if total is not None:
        extra = f", {_q_label(quantile)} {_num(total.get('quantile'))}" if quantile else ""
        console.print(
            f"all: count {total['count']}, mean {_num(total['mean'])}, "
            f"min {_num(total['min'])}, max {_num(total['max'])}{extra}"
        )


@app.command("query")
def query(
    ctx: typer.Context,
    metric: str = typer.Option(..., "--metric", "-m", help="e.g. inference.latency_ms"),
    device: str = typer.Option(None, "--device", "-d", help="A device id or name"),
    selector: str = typer.Option(None, "--selector", "-l", help="Or a label selector"),
    since: str = typer.Option("1h", help="A duration ago (1h, 30m) or an ISO 8601 time"),
    until: str = typer.Option(None, help="Default now"),
    quantile: float = typer.Option(None, "--quantile", "-q", min=0, max=1, help="e.g. 0.95"),
    step: str = typer.Option(None, help="Bucket length, e.g. 60s, 5m [automatic]"),
    output: Output = OutputOpt,
) -> None:
    """A metric over time: per-bucket count, mean, min, max (and a quantile), charted."""
    if (device is None) == (selector is None):
        raise InvalidInput("give exactly one of --device and --selector")
    with ctx.obj.client() as client:
        result = client.telemetry_query(metric, device, selector, since, until, quantile, step)
    if output.is_document or output is Output.NAME:
        emit_object(result, output, [], name=lambda r: r["metric"])
    elif device is not None:
        _render_series(result)
    else:
        _render_devices(result)


@app.command("kpis")
def kpis(
    ctx: typer.Context,
    device: str = typer.Option(None, "--device", "-d"),
    selector: str = typer.Option(None, "--selector", "-l"),
    since: str = typer.Option("1h"),
    until: str = typer.Option(None),
    output: Output = OutputOpt,
) -> None:
    """The policy's KPIs (p95 latency, error rate, ...) per device over a period."""
    if (device is None) == (selector is None):
        raise InvalidInput("give exactly one of --device and --selector")
    with ctx.obj.client() as client:
        result = client.telemetry_kpis(device, selector, since=since, until=until)
    if output.is_document:
        emit_document(result, output)
        return
    if output is Output.NAME:
        print_names(sorted(result["kpis"]))
        return
    rows = [
        {"device": d, "kpi": k, **reading}
        for d, readings in sorted(result["kpis"].items())
        for k, reading in sorted(readings.items())
    ]
    emit_list(rows, Output.TABLE, [
        Column("DEVICE", lambda r: r["device"], "cyan"),
        Column("KPI", lambda r: r["kpi"]),
        Column("VALUE", lambda r: _num(r["value"])),
        Column("SAMPLES", lambda r: r["samples"]),
    ])  # fmt: skip


def _clock(skew_s: int | None) -> str:
    if skew_s is None:
        return "-"
    if skew_s == 0:
        return "in step with the server at its last upload"
    return f"{abs(skew_s)} s {'ahead of' if skew_s > 0 else 'behind'} the server at its last upload"


def _moved(s: dict[str, Any]) -> str:
    if not s["shifted_batches"]:
        return "none"
    return (
        f"{s['shifted_windows']} windows in {s['shifted_batches']} batches; "
        f"last by {s['last_shift_s']:+d} s, largest {s['largest_shift_s']:+d} s"
    )


STATUS_FIELDS = [
    Column("DEVICE", lambda s: s["device_id"]),
    Column("ACKED THROUGH", lambda s: s["acked_through_seq"]),
    Column("BATCHES STORED", lambda s: s["batches_stored"]),
    Column("WINDOWS STORED", lambda s: s["windows_stored"]),
    Column(
        "DROPPED (DEVICE)",
        lambda s: f"{s['dropped_batches_total']} batches, {s['dropped_windows_total']} windows",
    ),
    Column("LAST BATCH", lambda s: ago(s["last_batch_at"])),
    Column("DEVICE CLOCK", lambda s: _clock(s["clock_skew_s"])),
    Column("WINDOWS MOVED", _moved),
    Column("LAST MOVE", lambda s: s["last_shift_reason"] or "-"),
]


@app.command("status")
def status(ctx: typer.Context, device: str, output: Output = OutputOpt) -> None:
    """Ingest status of one device: what is stored, what it reports having dropped, how far
    its clock was off and which windows were moved onto the server's clock."""
    with ctx.obj.client() as client:
        emit_object(client.telemetry_status(device), output, STATUS_FIELDS)


@app.command("metrics")
def metrics(
    ctx: typer.Context, device: str, since: str = typer.Option("24h"), output: Output = OutputOpt
) -> None:
    """The metric names a device has reported."""
    with ctx.obj.client() as client:
        names = client.telemetry_metrics(device, since)
    if output.is_document:
        emit_document(names, output)
    else:
        for name in names:
            console.print(name)


SEALING_FIELDS = [
    Column("SEALED", lambda s: "on" if s["enabled"] else "off"),
    Column("INGEST KEY", lambda s: s["key_id"] or "-"),
    Column("PUBLIC KEY", lambda s: s["public_key"] or "-"),
    Column("VERSION", lambda s: s["version"]),
]


@app.command("sealing")
def sealing(
    ctx: typer.Context,
    on: bool = typer.Option(False, "--on", help="Devices seal their telemetry batches"),
    off: bool = typer.Option(False, "--off", help="Devices send telemetry unsealed"),
    rotate: bool = typer.Option(
        False, "--rotate", help="Make a new ingest key (batches sealed to the last 3 still open)"
    ),
    output: Output = OutputOpt,
) -> None:
    """Sealed telemetry: whether devices encrypt their telemetry and checkpoints end to end
    to the control plane's ingest key (brokers and gateways in between see nothing), and
    the key's id. With --on, --off or --rotate, change it; every device follows."""
    if on and off:
        raise InvalidInput("--on and --off exclude each other")
    with ctx.obj.client() as client:
        if on or off or rotate:
            enabled = on or (not off and client.telemetry_sealing()["enabled"])
            record = client.set_telemetry_sealing(enabled, rotate)
        else:
            record = client.telemetry_sealing()
    emit_object(record, output, SEALING_FIELDS, name=lambda s: s["key_id"] or "")


@policy_app.command("show")
def policy_show(
    ctx: typer.Context,
    output: str = typer.Option("yaml", "--output", "-o", metavar="FORMAT", help="yaml or json"),
) -> None:
    """The fleet telemetry policy in force (every default spelled out)."""
    with ctx.obj.client() as client:
        record = client.telemetry_policy()
    if output == "json":
        print_json(record)
        return
    who = (
        f"version {record['version']}, set by {record['updated_by']} {ago(record['updated_at'])}"
        if record["version"]
        else "built-in default (never set)"
    )
    typer.echo(f"# {who}")
    typer.echo(yaml.safe_dump(record["manifest"], sort_keys=False).rstrip())


@policy_app.command("set")
def policy_set(
    ctx: typer.Context,
    file: Path = typer.Option(..., "--file", "-f", help="Policy YAML or JSON"),
    output: Output = OutputOpt,
) -> None:
    """Replace the fleet telemetry policy; devices follow within seconds, no redeploy."""
    try:
        manifest = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read {file}: {e}") from None
    if not isinstance(manifest, dict):
        raise InvalidInput(f"{file}: expected a mapping at the top")
    with ctx.obj.client() as client:
        record = client.set_telemetry_policy(manifest)
    if output.is_document:
        emit_document(record, output)
    else:
        sets = ", ".join(f"{s['name']} {s['window_s']}s" for s in record["manifest"]["sets"])
        console.print(
            f"telemetry policy version {record['version']} set: {sets}; "
            f"active {', '.join(record['manifest']['active_sets'])}"
        )


def _alert_value(a: dict[str, Any]) -> str:
    return "-" if a["value"] is None else f"{a['value']:.4g}"


ALERT_COLUMNS = [
    Column("ID", lambda a: a["id"], "cyan"),
    Column("DEVICE", lambda a: a["device_id"]),
    Column("KIND", lambda a: a["kind"]),
    Column("KPI", lambda a: a["kpi"]),
    Column("STATUS", lambda a: "[red]open[/red]" if a["status"] == "open" else "closed"),
    Column("OPENED", lambda a: ago(a["opened_at"])),
    Column("CLOSED", lambda a: ago(a["closed_at"]) if a["closed_at"] else "-"),
    Column("VALUE", _alert_value),
    Column("REASON", lambda a: a["close_reason"] or a["open_reason"]),
]


@alerts_app.command("list")
def list_alerts(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", "-a", help="Also alerts closed recently"),
    closed_within: str = typer.Option("24h", help="How far back --all looks"),
    device: str = typer.Option(None, "--device", "-d", help="Only this device"),
    output: Output = OutputOpt,
) -> None:
    """Open alerts (and with --all, recently closed ones) with their reasons."""
    with ctx.obj.client() as client:
        rows = client.list_alerts(all_, device, closed_within)
    emit_list(rows, output, ALERT_COLUMNS)


describe(app, {
    "query": ["edgefleet telemetry query -m inference.latency_ms -d cam-1 --since 1h -q 0.95",
              "edgefleet telemetry query -m host.cpu.percent -l site=berlin --step 5m"],
    "kpis": ["edgefleet telemetry kpis -l kind=camera --since 1h"],
    "status": ["edgefleet telemetry status cam-1"],
    "metrics": ["edgefleet telemetry metrics cam-1 --since 24h"],
    "sealing": ["edgefleet telemetry sealing", "edgefleet telemetry sealing --on",
                "edgefleet telemetry sealing --rotate -o json"],
})  # fmt: skip
describe(policy_app, {
    "show": ["edgefleet telemetry policy show > policy.yaml"],
    "set": ["edgefleet telemetry policy set -f policy.yaml"],
})  # fmt: skip
describe(alerts_app, {
    "list": ["edgefleet alerts list", "edgefleet alerts list --all --closed-within 7d -d cam-1"],
})  # fmt: skip
