"""`edgefleet agent`: run the device agent."""

from __future__ import annotations

import os
from pathlib import Path

import typer

# Crash-safety testing: the agent SIGKILLs itself right after journaling this install state.
FAULT_ENV = "EDGEFLEET_FAULT_KILL_AT"
# Lossy-link testing: this share of periodic heartbeats is dropped before it is sent.
HEARTBEAT_LOSS_ENV = "EDGEFLEET_FAULT_HEARTBEAT_LOSS"


def agent(
    server: str = typer.Option(..., envvar="EDGEFLEET_SERVER", help="Control plane URL"),
    data_dir: Path = typer.Option(..., envvar="EDGEFLEET_DATA_DIR", help="Key and state"),
    enroll_token: str = typer.Option(
        None, envvar="EDGEFLEET_ENROLL_TOKEN", help="Needed only until the device is enrolled"
    ),
    name: str = typer.Option(None, help="Device name [host name]"),
    label: list[str] = typer.Option([], "--label", "-l", help="k=v, repeatable (at enrollment)"),
    heartbeat_interval: float = typer.Option(15.0, help="Seconds between heartbeats"),
    region: str = typer.Option(None, envvar="EDGEFLEET_REGION"),
    zone: str = typer.Option(None, envvar="EDGEFLEET_ZONE"),
    timezone: str = typer.Option(None, envvar="EDGEFLEET_TIMEZONE", help="IANA zone name"),
    latitude: float = typer.Option(None, min=-90, max=90),
    longitude: float = typer.Option(None, min=-180, max=180),
    accelerator: list[str] = typer.Option([], help="e.g. npu, gpu (repeatable)"),
    max_backoff: float = typer.Option(60.0, help="Longest wait between retries, seconds"),
    sandbox_memory_limit: int = typer.Option(
        1024, help="Memory limit (MB) of the sandboxed model check before an install"
    ),
    sandbox_timeout: float = typer.Option(60.0, help="Time limit (s) of the sandboxed check"),
    statsd_port: int = typer.Option(
        8125, envvar="EDGEFLEET_STATSD_PORT",
        help="Loopback UDP port of the workloads' StatsD endpoint (0: any free port)",
    ),
    telemetry_sample_interval: float = typer.Option(
        10.0, help="Seconds between host metric readings"
    ),
    telemetry_batch_interval: float = typer.Option(
        60.0, help="Seconds between cutting closed windows into a queued batch"
    ),
    telemetry_queue_max_bytes: int = typer.Option(
        16 * 1024 * 1024, help="Bound of the on-disk telemetry queue (oldest dropped first)"
    ),
    telemetry_queue_max_rows: int = typer.Option(10_000, help="Most batches the queue holds"),
    advertise_address: str = typer.Option(
        "127.0.0.1", envvar="EDGEFLEET_ADVERTISE_ADDRESS",
        help="Host at which clients reach this device's workloads (published endpoints)",
    ),
    simulated_battery: str = typer.Option(
        None, envvar="EDGEFLEET_SIMULATED_BATTERY",
        help="Tests and demos only: report a battery at START%, draining DRAIN points per "
        "minute (START[:DRAIN_PER_MIN], e.g. 80:6)",
    ),
    log_level: str = typer.Option("info", envvar="EDGEFLEET_LOG_LEVEL"),
) -> None:
    """Run the device agent: enroll, heartbeat, follow the desired state."""
    import asyncio
    import signal
    import socket

    from edgefleet.agent.agent import Agent
    from edgefleet.agent.hardware import HostHardware
    from edgefleet.agent.process_runtime import HostRuntime
    from edgefleet.agent.settings import AgentSettings
    from edgefleet.clock import SystemClock
    from edgefleet.core.install import InstallState
    from edgefleet.core.labels import parse_label_assignments
    from edgefleet.logfmt import configure
    from edgefleet.transport.http import HttpTransport

    configure(log_level)
    settings = AgentSettings(
        server_url=server,
        data_dir=data_dir,
        enroll_token=enroll_token,
        name=name or socket.gethostname(),
        labels=parse_label_assignments(label),
        heartbeat_interval_s=heartbeat_interval,
        max_backoff_s=max_backoff,
        region=region,
        zone=zone,
        timezone=timezone,
        latitude=latitude,
        longitude=longitude,
        accelerators=tuple(accelerator),
        sandbox_memory_limit_mb=sandbox_memory_limit,
        sandbox_timeout_s=sandbox_timeout,
        statsd_port=statsd_port,
        telemetry_sample_interval_s=telemetry_sample_interval,
        telemetry_batch_interval_s=telemetry_batch_interval,
        telemetry_queue_max_bytes=telemetry_queue_max_bytes,
        telemetry_queue_max_rows=telemetry_queue_max_rows,
        fault_kill_at=InstallState(fault) if (fault := os.environ.get(FAULT_ENV)) else None,
        advertise_address=advertise_address,
        simulated_battery=simulated_battery,
        fault_heartbeat_loss=float(os.environ.get(HEARTBEAT_LOSS_ENV) or 0),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = Agent(
            settings,
            clock=SystemClock(),
            transport=HttpTransport(server),
            hardware=HostHardware(data_dir, list(accelerator)),
            runtime=HostRuntime(),
        )
        await runner.run(stop)

    asyncio.run(main())
