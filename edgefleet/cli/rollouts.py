"""`edgefleet rollouts ...` and `edgefleet trains ...`."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import typer
from rich.live import Live

from edgefleet.cli.help_text import describe, examples
from edgefleet.cli.output import (
    Column,
    Output,
    OutputOpt,
    ago,
    console,
    emit_document,
    emit_list,
    emit_object,
    error_console,
    format_time,
    print_json,
    print_names,
    styled,
)
from edgefleet.cli.rollout_view import is_final, render_plan, render_status
from edgefleet.client import FleetClient
from edgefleet.core.hidden_characters import escape_hidden
from edgefleet.errors import InvalidInput, Unavailable

app = typer.Typer(
    help="Fleet rollouts: waves, health gates, windows, rollback.", no_args_is_help=True
)
trains_app = typer.Typer(
    help="Release trains: each next release rolls out by itself once the "
    "previous rollout passed its gates.",
    no_args_is_help=True,
)

# How long `status --watch` keeps retrying while the control plane cannot be reached.
RECONNECT_S = 30.0
# `status --watch` exit statuses by the state the rollout ended in (0: succeeded).
EXIT_STATUS = {"failed": 3, "rolled-back": 4, "aborted": 5}
STATUS_EPILOG = (
    examples(
        "edgefleet rollouts status detector-2-1",
        "edgefleet rollouts status detector-2-1 --watch && echo fleet updated",
        "edgefleet rollouts status ro-1a2b3c4d5e --watch -o json | jq -c '{state, summary}'",
    )
    + "\n\n[bold]Exit status with --watch[/bold]\n"
    "  0 succeeded · 3 failed · 4 rolled back · 5 aborted · 1 an error (unknown rollout, "
    "control plane unreachable for 30 s)"
)


class ReportFormat(StrEnum):
    MARKDOWN = "markdown"
    JSON = "json"


def _wave(r: dict[str, Any]) -> str:
    if r["waves_total"] is None:
        return "-"
    if not r["waves_total"]:
        return "0/0"
    return f"{r['wave'] + 1}/{r['waves_total']}"


def _progress(r: dict[str, Any]) -> str:
    counts = r.get("counts", {})
    total = sum(counts.values())
    if not total:
        return "-"
    done = counts.get("installed", 0)
    extra = [f"{counts[s]} {s}" for s in ("failed", "rolled-back", "skipped-incompatible")
             if counts.get(s)]  # fmt: skip
    return f"{done}/{total} installed" + (f" ({', '.join(extra)})" if extra else "")


ROLLOUT_COLUMNS = [
    Column("ID", lambda r: r["id"], "cyan"),
    Column("NAME", lambda r: r["name"]),
    Column("RELEASE", lambda r: r["release"]),
    Column("STATE", lambda r: styled(r["state"])),
    Column("WAVE", _wave),
    Column("DEVICES", _progress),
    Column("CREATED", lambda r: ago(r["created_at"])),
]
ROLLOUT_WIDE_COLUMNS = [
    Column("TARGET", lambda r: r["target"] or "(every device)"),
    Column("TRAIN", lambda r: r["train"] or "-"),
    Column("CREATED BY", lambda r: r["created_by"]),
    Column("REASON", lambda r: r["reason"]),
]
DEVICE_COLUMNS = [
    Column("DEVICE", lambda d: d["name"], "cyan"),
    Column("ID", lambda d: d["device_id"]),
    Column("WAVE", lambda d: "-" if d["wave"] is None else d["wave"] + 1),
    Column("STATE", lambda d: styled(d["state"])),
    Column("ATTEMPTS", lambda d: d["attempts"]),
    Column("REASON", lambda d: d["reason"] or "-"),
]


def manifest_from_flags(
    release: str,
    *,
    name: str | None = None,
    target: str = "",
    waves: str | None = None,
    soak: str | None = None,
    max_unavailable: str | None = None,
    devices_per_minute: int | None = None,
    install_timeout: str | None = None,
    max_install_failure_percent: float | None = None,
    max_error_rate_percent: float | None = None,
    min_requests: int | None = None,
    min_devices: int | None = None,
    max_latency_increase_percent: float | None = None,
    on_failure: str | None = None,
    windows: list[str] | None = None,
    deadline: str | None = None,
    deadline_action: str = "fail",
    max_attempts: int | None = None,
) -> dict[str, Any]:
    """A Rollout manifest from `rollouts create` flags (only what was given; the server
    fills in the defaults and validates).

    >>> manifest_from_flags("det@2.0.0", waves="1, 50%, 100%", max_error_rate_percent=1)
    ... # doctest: +NORMALIZE_WHITESPACE
    {'kind': 'Rollout', 'spec': {'release': 'det@2.0.0', 'target': '',
     'strategy': {'waves': [1, '50%', '100%']},
     'gates': {'workload_error_rate': {'max_percent': 1}}}}
    """
    spec: dict[str, Any] = {"release": release, "target": target}
    strategy: dict[str, Any] = {}
    if waves:
        strategy["waves"] = [int(w) if w.isdigit() else w for w in
                             (part.strip() for part in waves.split(",")) if w]  # fmt: skip
    for key, value in (("soak", soak), ("max_unavailable", max_unavailable),
                       ("devices_per_minute", devices_per_minute),
                       ("install_timeout", install_timeout)):  # fmt: skip
        if value is not None:
            strategy[key] = value
    if strategy:
        spec["strategy"] = strategy
    gates: dict[str, Any] = {}
    common = {} if min_devices is None else {"min_devices": min_devices}
    if max_install_failure_percent is not None:
        gates["install_failure_rate"] = {"max_percent": max_install_failure_percent, **common}
    if max_error_rate_percent is not None:
        gate: dict[str, Any] = {"max_percent": max_error_rate_percent, **common}
        if min_requests is not None:
            gate["min_requests"] = min_requests
        gates["workload_error_rate"] = gate
    if max_latency_increase_percent is not None:
        gates["kpis"] = [
            {
                "kpi": "p95_latency_ms",
                "max_increase_percent": max_latency_increase_percent,
                **common,
            }
        ]
    if gates:
        spec["gates"] = gates
    if on_failure is not None:
        spec["on_failure"] = on_failure
    if windows:
        spec["maintenance_windows"] = [_window(w) for w in windows]
    if deadline is not None:
        when = "at" if "T" in deadline or "-" in deadline else "after"
        spec["deadline"] = {when: deadline, "action": deadline_action}
    if max_attempts is not None:
        spec["retries"] = {"max_attempts": max_attempts}
    manifest: dict[str, Any] = {"kind": "Rollout", "spec": spec}
    if name:
        manifest["metadata"] = {"name": name}
    return manifest


def _window(text: str) -> dict[str, Any]:
    """`CRON;DURATION[;ZONE]`, e.g. `0 2 * * *;4h;device`."""
    parts = [p.strip() for p in text.split(";")]
    if len(parts) not in (2, 3):
        raise InvalidInput(f"--window {text!r}: expected 'CRON;DURATION[;TIME_ZONE]'")
    window: dict[str, Any] = {"cron": parts[0], "duration": parts[1]}
    if len(parts) == 3:
        window["time_zone"] = parts[2]
    return window


@app.command("create")
def create(
    ctx: typer.Context,
    release: str = typer.Option(..., "--release", "-r", help="NAME@VERSION (signed)"),
    name: str = typer.Option(None, help="Rollout name [NAME-VERSION]"),
    target: str = typer.Option("", "--target", "-l", help="Label selector [every device]"),
    waves: str = typer.Option(None, help="Cumulative wave sizes, e.g. '1,10%,50%,100%'"),
    soak: str = typer.Option(None, help="Soak after each wave, e.g. 30m [10m]"),
    max_unavailable: str = typer.Option(None, help="Devices updating/unhealthy at once [10%]"),
    devices_per_minute: int = typer.Option(None, help="Rate limit on assignments"),
    install_timeout: str = typer.Option(None, help="No install report by then: failed [1h]"),
    max_install_failure: float = typer.Option(None, help="Gate: install failures ≤ PERCENT"),
    max_error_rate: float = typer.Option(None, help="Gate: workload errors ≤ PERCENT"),
    min_requests: int = typer.Option(None, help="Error-rate gate: requests needed [100]"),
    min_devices: int = typer.Option(None, help="Gates: devices needed to decide [2]"),
    max_latency_increase: float = typer.Option(
        None, help="Gate: p95 latency may rise at most PERCENT over its baseline"
    ),
    on_failure: str = typer.Option(None, help="rollback or pause [rollback]"),
    window: list[str] = typer.Option(
        [], help="Maintenance window 'CRON;DURATION[;TIME_ZONE|device]', repeatable"
    ),
    deadline: str = typer.Option(None, help="A duration after the start (72h) or a time"),
    deadline_action: str = typer.Option("fail", help="fail or force"),
    max_attempts: int = typer.Option(None, help="Installs tried per device [3]"),
    supersede: bool = typer.Option(
        False, "--supersede", help="Take over devices of other active rollouts"
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Ask the control plane what would happen: the devices and the waves, nothing stored",
    ),
    output: Output = OutputOpt,
) -> None:
    """Create a rollout from flags (the same as `edgefleet apply -f` with a Rollout)."""
    manifest = manifest_from_flags(
        release, name=name, target=target, waves=waves, soak=soak,
        max_unavailable=max_unavailable, devices_per_minute=devices_per_minute,
        install_timeout=install_timeout, max_install_failure_percent=max_install_failure,
        max_error_rate_percent=max_error_rate, min_requests=min_requests,
        min_devices=min_devices, max_latency_increase_percent=max_latency_increase,
        on_failure=on_failure, windows=window, deadline=deadline,
        deadline_action=deadline_action, max_attempts=max_attempts,
    )  # fmt: skip
    with ctx.obj.client() as client:
        answer = client.create_rollout(manifest, supersede=supersede, dry_run=dry_run)
    if output.is_document or output is Output.NAME:
        emit_object(answer["rollout"] if output is Output.NAME else answer, output, [])
        return
    if dry_run:
        console.print(render_plan(answer))
        return
    r = answer["rollout"]
    verb = "created" if answer["created"] else "unchanged (already active)"
    console.print(f"rollout {r['name']} ({r['id']}) {verb}: {r['release']} → '{r['target']}'",
                  highlight=False)  # fmt: skip
    if answer["superseded"]:
        console.print(f"superseded and aborted: {', '.join(answer['superseded'])}")


@app.command("list")
def list_rollouts(
    ctx: typer.Context,
    active: bool = typer.Option(False, "--active", help="Only unfinished rollouts"),
    output: Output = OutputOpt,
) -> None:
    """List rollouts, newest first."""
    with ctx.obj.client() as client:
        emit_list(client.list_rollouts(active), output, ROLLOUT_COLUMNS, wide=ROLLOUT_WIDE_COLUMNS)


@app.command("show")
def show(ctx: typer.Context, rollout: str, output: Output = OutputOpt) -> None:
    """Show a rollout (by id or name) with each device's state and reason."""
    with ctx.obj.client() as client:
        status = client.get_rollout(rollout)
    if output.is_document or output is Output.NAME:
        emit_object(status, output, [])
        return
    fields = [
        Column("ID", lambda r: r["id"]),
        Column("NAME", lambda r: r["name"]),
        Column("RELEASE", lambda r: r["release"]),
        Column("TARGET", lambda r: r["target"] or "(every device)"),
        Column("STATE", lambda r: styled(r["state"])),
        Column("NOW", lambda r: r["summary"]),
        Column("WAVE", _wave),
        Column("ON FAILURE", lambda r: r["on_failure"]),
        Column("TRAIN", lambda r: r["train"] or "-"),
        Column("CREATED", lambda r: f"{format_time(r['created_at'])} by {r['created_by']}"),
    ]
    emit_object(status, output, fields)
    console.print()
    emit_list(status["devices"], output, DEVICE_COLUMNS)


def _fetch_through_drops(client: FleetClient, rollout: str) -> dict[str, Any]:
    """The rollout's status, retried while the control plane is briefly unreachable."""
    deadline = time.monotonic() + RECONNECT_S
    while True:
        try:
            return client.get_rollout(rollout)
        except Unavailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


def _watch_lines(client: FleetClient, rollout: str, interval: float) -> Any:
    """Each distinct status of the rollout until it ends (the first one at once)."""
    current = _fetch_through_drops(client, rollout)
    yield current
    while not is_final(current):
        time.sleep(max(0.2, interval))
        latest = _fetch_through_drops(client, rollout)
        if latest != current:
            yield latest
        current = latest


def _exit_with_outcome(status: dict[str, Any]) -> None:
    code = EXIT_STATUS.get(status["state"], 0)
    if code:
        error_console.print(
            f"rollout {status['name']} ({status['id']}) ended {status['state']}: "
            f"{status['reason']}", highlight=False, markup=False,
        )  # fmt: skip
        raise typer.Exit(code)


@app.command("status", epilog=STATUS_EPILOG)
def status(
    ctx: typer.Context,
    rollout: str = typer.Argument(..., metavar="ID|NAME"),
    watch: bool = typer.Option(
        False,
        "--watch",
        "-w",
        help="Follow the rollout until it ends; the exit status says how it ended",
    ),
    interval: float = typer.Option(
        1.0, metavar="SECONDS", help="Seconds between looks with --watch"
    ),
    output: Output = OutputOpt,
) -> None:
    """Progress per wave (installed / in progress / failed / skipped) and gate results."""
    with ctx.obj.client() as client:
        if not watch:
            current = client.get_rollout(rollout)
            if output is Output.TABLE or output is Output.WIDE:
                console.print(render_status(current))
            else:
                emit_object(current, output, [])
            return
        if output.is_document or output is Output.NAME:
            current = _stream(client, rollout, interval, output)
        elif console.is_terminal:
            current = _redraw(client, rollout, interval)
        else:
            current = _log(client, rollout, interval)
    _exit_with_outcome(current)


def _stream(client: FleetClient, rollout: str, interval: float, output: Output) -> Any:
    """One document per change: a JSON object per line, or YAML documents."""
    current: dict[str, Any] = {}
    for current in _watch_lines(client, rollout, interval):
        if output is Output.JSON:
            sys.stdout.write(json.dumps(current, sort_keys=True) + "\n")
        elif output is Output.YAML:
            sys.stdout.write("---\n")
            emit_document(current, output)
        else:
            print_names([f"{current['name']} {current['state']}"])
        sys.stdout.flush()
    return current


def _redraw(client: FleetClient, rollout: str, interval: float) -> Any:
    lines = _watch_lines(client, rollout, interval)
    current = next(lines)
    with Live(render_status(current), console=console, refresh_per_second=4) as live:
        for current in lines:
            live.update(render_status(current), refresh=True)
    return current


def _log(client: FleetClient, rollout: str, interval: float) -> Any:
    """Off a terminal: a line per change, then the final status."""
    current: dict[str, Any] = {}
    for current in _watch_lines(client, rollout, interval):
        console.print(f"{format_time(datetime.now(UTC))} {current['state']}: "
                      f"{current['summary']}", highlight=False, markup=False)  # fmt: skip
        sys.stdout.flush()
    console.print(render_status(current))
    return current


def _command(ctx: typer.Context, rollout: str, command: str, note: str, output: Output) -> None:
    with ctx.obj.client() as client:
        result = client.rollout_command(rollout, command, note)
    if output.is_document or output is Output.NAME:
        emit_object(result, output, [])
        return
    console.print(f"rollout {result['name']} ({result['id']}): {styled(result['state'])} — "
                  f"{result['reason']}", highlight=False)  # fmt: skip


NoteOpt = typer.Option("", "--note", help="Why (kept in the timeline and the audit log)")


@app.command("approve")
def approve(ctx: typer.Context, rollout: str, note: str = NoteOpt,
            output: Output = OutputOpt) -> None:  # fmt: skip
    """Approve a rollout awaiting a second operator (its requester cannot)."""
    with ctx.obj.client() as client:
        result = client.approve_rollout(rollout, note)
    if output.is_document or output is Output.NAME:
        emit_object(result, output, [])
        return
    console.print(f"rollout {result['name']} ({result['id']}): {styled(result['state'])} — "
                  f"{result['reason']}", highlight=False)  # fmt: skip


@app.command("pause")
def pause(ctx: typer.Context, rollout: str, note: str = NoteOpt,
          output: Output = OutputOpt) -> None:  # fmt: skip
    """Stop assigning the release; devices already updating finish."""
    _command(ctx, rollout, "pause", note, output)


@app.command("resume")
def resume(ctx: typer.Context, rollout: str, note: str = NoteOpt,
           output: Output = OutputOpt) -> None:  # fmt: skip
    """Go on; a settled wave soaks again and its gates are evaluated afresh."""
    _command(ctx, rollout, "resume", note, output)


@app.command("abort")
def abort(ctx: typer.Context, rollout: str, note: str = NoteOpt,
          output: Output = OutputOpt) -> None:  # fmt: skip
    """End the rollout; every device keeps what it has."""
    _command(ctx, rollout, "abort", note, output)


@app.command("rollback")
def rollback(ctx: typer.Context, rollout: str, note: str = NoteOpt,
             output: Output = OutputOpt) -> None:  # fmt: skip
    """Return every device that got the release to its previous release."""
    _command(ctx, rollout, "rollback", note, output)


@app.command("report")
def report(
    ctx: typer.Context,
    rollout: str,
    output: ReportFormat = typer.Option(
        ReportFormat.MARKDOWN, "--output", "-o", help="markdown or json"
    ),
) -> None:
    """The after-action report: timeline, waves, gates with values, skipped and failed
    devices, rollback actions."""
    with ctx.obj.client() as client:
        if output is ReportFormat.JSON:
            print_json(client.rollout_report(rollout))
        else:
            markdown = client.rollout_report_markdown(rollout)
            sys.stdout.write(escape_hidden(markdown, keep="\n\t"))


TRAIN_COLUMNS = [
    Column("NAME", lambda t: t["name"], "cyan"),
    Column("STATE", lambda t: styled(t["state"])),
    Column("AT", lambda t: t["current_release"] or "-"),
    Column("RELEASES", lambda t: len(t["releases"])),
    Column("ROLLOUT", lambda t: t["rollout_id"] or "-"),
    Column("REASON", lambda t: t["reason"]),
]
TRAIN_WIDE_COLUMNS = [Column("ALL RELEASES", lambda t: ", ".join(t["releases"]))]


@trains_app.command("list")
def list_trains(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List release trains (create and update them with `edgefleet apply -f`)."""
    with ctx.obj.client() as client:
        emit_list(client.list_release_trains(), output, TRAIN_COLUMNS, wide=TRAIN_WIDE_COLUMNS)


@trains_app.command("show")
def show_train(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Show a release train: its releases, where it is, and why."""
    with ctx.obj.client() as client:
        train = client.get_release_train(name)
    emit_object(train, output, [*TRAIN_COLUMNS, *TRAIN_WIDE_COLUMNS])


describe(app, {
    "create": ["edgefleet rollouts create -r vision@1.2.0 -l kind=camera --waves 1,10%,100% "
               "--dry-run",
               "edgefleet rollouts create -r vision@1.2.0 -l kind=camera --max-error-rate 1"],
    "list": ["edgefleet rollouts list --active", "edgefleet rollouts list -o wide"],
    "show": ["edgefleet rollouts show vision-1-2-0"],
    "pause": ["edgefleet rollouts pause vision-1-2-0 --note 'store opening hours'"],
    "resume": ["edgefleet rollouts resume vision-1-2-0"],
    "abort": ["edgefleet rollouts abort vision-1-2-0 --note 'wrong target'"],
    "rollback": ["edgefleet rollouts rollback vision-1-2-0"],
    "report": ["edgefleet rollouts report vision-1-2-0 > review.md"],
})  # fmt: skip
describe(trains_app, {
    "list": ["edgefleet trains list"],
    "show": ["edgefleet trains show vision"],
})  # fmt: skip
