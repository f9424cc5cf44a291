"""`edgefleet sim ...`: virtual fleets running the real agent against a real control plane."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from edgefleet.cli.output import Output, console, print_json
from edgefleet.core.durations import format_duration, parse_duration
from edgefleet.errors import InvalidInput, SettingsError

app = typer.Typer(
    help="Simulate fleets: virtual devices running the real agent.", no_args_is_help=True
)

APPROVE_MODES = ("auto", "api", "none")


def _progress_view(snapshot: Any, duration_s: float) -> Group:
    from edgefleet.sim.fleet import FleetSnapshot

    assert isinstance(snapshot, FleetSnapshot)
    head = Table(box=None, show_header=False, pad_edge=False)
    head.add_row(
        f"[bold]{snapshot.devices}[/bold] devices",
        f"{format_duration(snapshot.elapsed_s)} / {format_duration(duration_s)}",
        f"faults played {snapshot.faults_played}",
        f"agent crashes {snapshot.crashes}",
        f"simulator cpu {snapshot.cpu_s:.0f}s, rss {snapshot.max_rss_mb:.0f} MiB",
    )
    states = Table(box=None, header_style="bold", pad_edge=False)
    states.add_column("phase")
    states.add_column("enrollment")
    states.add_column("installs")
    phases = ", ".join(f"{k} {v}" for k, v in sorted(snapshot.phases.items()))
    enrollment = ", ".join(f"{k} {v}" for k, v in sorted(snapshot.enrollment.items()))
    installs = "\n".join(f"{k}: {v}" for k, v in sorted(snapshot.installs.items())[:8]) or "-"
    states.add_row(phases, enrollment, installs)
    traffic = Table(box=None, header_style="bold", pad_edge=False)
    for header in ("request", "count", "failed", "http err", "p50 ms", "p99 ms", "server p99 ms"):
        traffic.add_column(header, justify="right" if header != "request" else "left")
    for kind, row in snapshot.traffic.summary().items():
        traffic.add_row(
            kind,
            str(row["requests"]),
            str(row["failures"]),
            str(row["http_errors"]),
            _ms(row["total_p50_ms"]),
            _ms(row["total_p99_ms"]),
            _ms(row["server_p99_ms"]),
        )
    return Group(head, states, traffic)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@contextmanager
def _data_root(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    scratch = Path(tempfile.mkdtemp(prefix="edgefleet-sim-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@app.command("run")
def run(
    ctx: typer.Context,
    devices: int = typer.Option(..., "--devices", "-n", min=1, help="Virtual devices"),
    profile: str = typer.Option(
        ..., "--profile", "-p", help="Profile file, or a shipped profile's name"
    ),
    server: str = typer.Option(None, "--server", help="Control plane URL [global --server]"),
    token: str = typer.Option(
        None, "--token", help="Operator API token (creates the enrollment token) [global]"
    ),
    enroll_token: str = typer.Option(
        None, "--enroll-token", help="Use this enrollment token instead of creating one"
    ),
    approve: str = typer.Option(
        "auto", help="auto (token auto-approves), api (approve through the API), none"
    ),
    duration: str = typer.Option("10m", help="How long to run, e.g. 90s, 10m, 2h"),
    processes: int = typer.Option(1, min=1, max=64, help="Processes to spread devices over"),
    seed: int = typer.Option(None, help="Seed [the profile's]"),
    ramp: str = typer.Option(None, help="Spread device start-up over this long [n/20 s]"),
    warmup: str = typer.Option(
        "0s", help="Leave this first stretch (enrollment) out of the traffic statistics"
    ),
    heartbeat_interval: float = typer.Option(None, help="Seconds [the profile's]"),
    bad_release: list[str] = typer.Option(
        [], "--bad-release", help="name@version pattern served by a bad model (repeatable)"
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", help="Keep the devices' data here (default: a temporary directory)"
    ),
    summary: Path = typer.Option(None, "--summary", help="Write the JSON summary here"),
    log_file: Path = typer.Option(None, help="Agent logs [DATA_DIR/sim.log]"),
    log_level: str = typer.Option("warning", help="Agent log level"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No live view; print the summary"),
) -> None:
    """Run N virtual devices (the real agent, simulated hardware, processes and network)
    against a real control plane, and summarize what happened."""
    from edgefleet.client import FleetClient
    from edgefleet.sim.fleet import Approval
    from edgefleet.sim.profile import load_profile
    from edgefleet.sim.simulation import SimRunConfig, configure_logging, run_simulation

    if approve not in APPROVE_MODES:
        raise InvalidInput(f"--approve: expected one of {', '.join(APPROVE_MODES)}")
    duration_s = parse_duration(duration).total_seconds()
    ramp_s = None if ramp is None else parse_duration(ramp).total_seconds()
    loaded = load_profile(profile)  # fail early, naming the field
    server, token = server or ctx.obj.server, token or ctx.obj.token
    if server is None or (token is None and enroll_token is None):
        resolved_server, resolved_token = ctx.obj.resolved()  # the config file
        server, token = server or resolved_server, token or resolved_token
    if enroll_token is None:
        if not token:
            raise SettingsError("sim run needs --token (an operator token) or --enroll-token")
        with FleetClient(server, token) as client:
            created = client.create_enrollment_token(
                description=f"sim run: {devices} x {loaded.name}",
                auto_approve=approve == "auto",
                expires_in_s=duration_s + 3600,
            )
        enroll_token = created["token"]
    if approve == "api" and not token:
        raise SettingsError("--approve api needs --token (an operator token)")
    with _data_root(data_dir) as root:
        log_path = log_file or root / "sim.log"
        configure_logging(log_level, log_path)
        config = SimRunConfig(
            profile=profile, devices=devices, server_url=server, enroll_token=enroll_token,
            data_root=root / "devices", duration_s=duration_s, processes=processes,
            approval=Approval(approve, server, token), seed=seed, ramp_s=ramp_s,
            bad_releases=tuple(bad_release), heartbeat_interval_s=heartbeat_interval,
            log_level=log_level, log_file=log_path,
            warmup_s=parse_duration(warmup).total_seconds(),
        )  # fmt: skip
        if quiet:
            result = run_simulation(config)
        else:
            with Live(console=console, refresh_per_second=2, transient=False) as live:
                result = run_simulation(
                    config, lambda snap: live.update(_progress_view(snap, duration_s))
                )
    if summary is not None:
        summary.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        console.print(f"summary written to {summary}")
    if quiet or summary is None:
        print_json(result)


@app.command("load")
def load(
    ctx: typer.Context,
    devices: int = typer.Option(..., "--devices", "-n", min=1, help="Virtual devices"),
    transport: str = typer.Option("http", help="http or mqtt (the steady device traffic)"),
    server: str = typer.Option(None, "--server", help="Control plane URL [global --server]"),
    token: str = typer.Option(
        None, "--token", help="Operator API token (creates an auto-approving enrollment token)"
    ),
    enroll_token: str = typer.Option(
        None, "--enroll-token", help="Use this auto-approving enrollment token instead"
    ),
    mqtt: str = typer.Option(
        None, "--mqtt", help="Broker URL, mqtt://HOST:PORT (--transport mqtt)"
    ),
    duration: str = typer.Option("60s", help="How long to run, enrollment included"),
    heartbeat_interval: float = typer.Option(30.0, min=1, help="Seconds between heartbeats"),
    no_presence: bool = typer.Option(
        False,
        "--no-presence",
        help="mqtt: report every --heartbeat-interval, without a Will or 'online' (a node "
        "hosting replicas); by default as the agent: a signed Will and 'online', then the "
        "interval the control plane tells an idle device",
    ),
    long_poll: float = typer.Option(30.0, min=1, help="Desired-state long poll (http), seconds"),
    telemetry_interval: str = typer.Option(
        "300s", help="Telemetry upload interval (a batch a minute, as the agent); 0s: none"
    ),
    ramp: str = typer.Option("0s", help="Spread device start-up over this long"),
    warmup: str = typer.Option(
        "0s", help="Leave this first stretch out of the latency percentiles"
    ),
    progress: Path = typer.Option(
        None, help="Append the counts sent so far here, 4 times a second (JSON lines)"
    ),
    workers: int = typer.Option(
        None, min=1, max=64, help="Worker processes [enough for the file limit]"
    ),
    sources: int = typer.Option(
        None,
        min=1,
        max=1000,
        help="Loopback source addresses 127.0.0.2... [enough for the ephemeral ports]",
    ),
    identities: Path = typer.Option(
        None, help="Keep the devices' keys here, so the next run reuses the same devices"
    ),
    name_prefix: str = typer.Option("load", help="Device names: PREFIX-000000, ..."),
    seed: int = typer.Option(1, help="Seed for keys (without --identities) and jitter"),
    output: Output = typer.Option(Output.TABLE, "--output", "-o", help="table or json"),
) -> None:
    """Run N light virtual devices (no agent: each only enrolls, heartbeats with signed
    reports, follows its desired state and uploads telemetry, at the agent's cadence and
    sizes, on connections of its own) against a real control plane, and summarize what
    was sent and what failed."""
    from edgefleet.client import FleetClient
    from edgefleet.sim.load import plan_source_addresses, plan_workers, run_load
    from edgefleet.sim.load_device import load_identities
    from edgefleet.sim.load_stats import LoadSettings, LoadTransport
    from edgefleet.transport.http_wire import split_url

    try:
        chosen = LoadTransport(transport)
    except ValueError:
        raise InvalidInput("--transport: expected http or mqtt") from None
    if chosen is LoadTransport.MQTT and not mqtt:
        raise SettingsError("--transport mqtt needs --mqtt mqtt://HOST:PORT")
    duration_s = parse_duration(duration).total_seconds()
    server, token = server or ctx.obj.server, token or ctx.obj.token
    if server is None or (token is None and enroll_token is None):
        resolved_server, resolved_token = ctx.obj.resolved()  # the config file
        server, token = server or resolved_server, token or resolved_token
    origin, _ = split_url(server)
    if enroll_token is None:
        if not token:
            raise SettingsError("sim load needs --token (an operator token) or --enroll-token")
        with FleetClient(server, token) as client:
            enroll_token = client.create_enrollment_token(
                description=f"sim load: {devices} devices", auto_approve=True,
                expires_in_s=duration_s + 3600,
            )["token"]  # fmt: skip
    planned_sources = plan_source_addresses(devices, chosen, origin.host)
    if sources is not None and origin.host.startswith("127."):
        planned_sources = tuple(f"127.0.0.{2 + i}" for i in range(min(sources, 250)))
    settings = LoadSettings(
        server_url=server, enroll_token=enroll_token, devices=devices, transport=chosen,
        mqtt_url=mqtt, duration_s=duration_s, heartbeat_interval_s=heartbeat_interval,
        presence=not no_presence, long_poll_s=long_poll,
        telemetry_upload_interval_s=parse_duration(telemetry_interval).total_seconds(),
        ramp_s=parse_duration(ramp).total_seconds(),
        warmup_s=parse_duration(warmup).total_seconds(),
        progress_path=None if progress is None else str(progress),
        workers=plan_workers(devices, chosen, workers), source_addresses=planned_sources,
        name_prefix=name_prefix, seed=seed,
    )  # fmt: skip
    result = run_load(settings, load_identities(identities, name_prefix, devices, seed))
    if output is Output.JSON:
        print_json(result)
        return
    head = Table(box=None, show_header=False, pad_edge=False)
    for key in ("devices", "enrolled", "enroll_failed", "reports_sent", "reports_failed",
                "telemetry_sent", "telemetry_failed", "desired_updates",
                "generator_cpu_percent_of_a_core"):  # fmt: skip
        head.add_row(key.replace("_", " "), str(result[key]))
    console.print(head)
    traffic = Table(box=None, header_style="bold", pad_edge=False)
    for header in ("request", "count", "no answer", "http err", "p50 ms", "p99 ms"):
        traffic.add_column(header, justify="right" if header != "request" else "left")
    for kind, row in result["traffic"].items():
        traffic.add_row(kind, str(row["requests"]), str(row["failures"]),
                        str(row["http_errors"]), _ms(row["total_p50_ms"]),
                        _ms(row["total_p99_ms"]))  # fmt: skip
    console.print(traffic)
    for error, count in result["errors"].items():
        console.print(f"{count} x {error}", highlight=False, markup=False)


@app.command("profiles")
def profiles(
    check: list[Path] = typer.Argument(None, help="Profile files to validate"),
) -> None:
    """List the shipped profiles, or validate profile files."""
    from edgefleet.sim.profile import load_profile, shipped_profiles

    names: list[str | Path] = list(check) if check else list(shipped_profiles())
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in ("profile", "classes", "regions", "faults", "description"):
        table.add_column(header)
    for name in names:
        loaded = load_profile(name)
        table.add_row(
            loaded.name,
            ", ".join(c.name for c in loaded.classes),
            ", ".join(r.name for r in loaded.regions),
            str(len(loaded.faults)),
            loaded.description,
        )
    console.print(table)
