"""A simulation run (`edgefleet sim run`): its configuration, its shards (one process each
for a large fleet) and the JSON summary it ends with.

    parent ──spawn──▶ shard 0: VirtualFleet(devices 0, P, 2P, ...) ──progress──┐
           ──spawn──▶ shard 1: VirtualFleet(devices 1, P+1, ...)   ──progress──┤ queue
           ◀──────────────────────────── merged snapshots, then each shard's final ──┘

Every shard draws the same blueprint list and the same fault schedule from the profile and
the seed, and takes every P-th device, so the fleet is the same whatever P is. With one
process everything runs in the caller's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgefleet.sim.blueprint import DeviceBlueprint, draw_fleet
from edgefleet.sim.device import FleetSettings
from edgefleet.sim.faults import FaultEvent, fault_to_document, schedule_faults
from edgefleet.sim.fleet import Approval, FleetSnapshot, VirtualFleet
from edgefleet.sim.profile import FleetProfile, load_profile

log = logging.getLogger(__name__)

SHARD_POLL_S = 0.5


@dataclass(frozen=True)
class SimRunConfig:
    profile: str  # a file or a shipped profile's name
    devices: int
    server_url: str
    enroll_token: str | None
    data_root: Path
    duration_s: float
    processes: int = 1
    approval: Approval = field(default_factory=Approval)
    seed: int | None = None  # None: the profile's
    ramp_s: float | None = None  # None: about 20 enrollments a second
    bad_releases: tuple[str, ...] = ()
    heartbeat_interval_s: float | None = None  # None: the profile's
    log_level: str = "warning"
    log_file: Path | None = None  # agents' logs (None: stderr)
    warmup_s: float = 0.0  # traffic statistics leave out the first seconds

    def ramp(self) -> float:
        return self.ramp_s if self.ramp_s is not None else self.devices / 20.0


def fleet_settings(config: SimRunConfig, profile: FleetProfile) -> FleetSettings:
    return FleetSettings(
        server_url=config.server_url,
        data_root=config.data_root,
        enroll_token=config.enroll_token,
        heartbeat_interval_s=config.heartbeat_interval_s or profile.heartbeat_interval_s,
        telemetry_sample_interval_s=profile.telemetry.sample_interval_s,
        telemetry_batch_interval_s=profile.telemetry.batch_interval_s,
        bad_model=profile.bad_model,
        bad_releases=(*profile.bad_releases, *config.bad_releases),
    )


def plan_run(config: SimRunConfig) -> tuple[FleetProfile, list[DeviceBlueprint], list[FaultEvent]]:
    """The profile, the fleet and its fault schedule: the same in every shard."""
    profile = load_profile(config.profile)
    seed = profile.seed if config.seed is None else config.seed
    blueprints = draw_fleet(profile, config.devices, seed)
    faults = schedule_faults(
        profile.faults, [b.fault_target() for b in blueprints], config.duration_s, seed
    )
    return profile, blueprints, faults


def configure_logging(level: str, path: Path | None) -> None:
    """Logfmt at `level`, to `path` when given (so a live view stays readable)."""
    from edgefleet.logfmt import LogfmtFormatter, configure

    configure(level)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(LogfmtFormatter())
        logging.getLogger().handlers[:] = [handler]


def _shard(config: SimRunConfig, shard: int, out: Any) -> None:
    """One shard, in its own process: run and report to the parent through `out`."""
    configure_logging(config.log_level, config.log_file)
    profile, blueprints, faults = plan_run(config)
    mine = blueprints[shard :: config.processes]
    # Every shard spreads its share of the devices over the whole ramp.
    fleet = VirtualFleet(mine, fleet_settings(config, profile), faults,
                         approval=config.approval, ramp_s=config.ramp(),
                         warmup_s=config.warmup_s)  # fmt: skip

    def progress(snapshot: FleetSnapshot) -> None:
        out.put(("progress", shard, snapshot.to_wire()))

    try:
        final = asyncio.run(_until_interrupted(fleet, config.duration_s, None, progress))
        out.put(("done", shard, final.to_wire()))
    except BaseException as e:
        out.put(("failed", shard, repr(e)))
        raise


def run_in_process(
    config: SimRunConfig,
    on_progress: Callable[[FleetSnapshot], None] | None = None,
    stop: asyncio.Event | None = None,
) -> tuple[FleetSnapshot, list[FaultEvent]]:
    """Run the whole fleet on this process's event loop (from synchronous code)."""
    profile, blueprints, faults = plan_run(config)
    fleet = VirtualFleet(blueprints, fleet_settings(config, profile), faults,
                         approval=config.approval, ramp_s=config.ramp(),
                         warmup_s=config.warmup_s)  # fmt: skip
    final = asyncio.run(_until_interrupted(fleet, config.duration_s, stop, on_progress))
    return final, fleet.played


async def _until_interrupted(
    fleet: VirtualFleet,
    duration_s: float,
    stop: asyncio.Event | None,
    on_progress: Callable[[FleetSnapshot], None] | None,
) -> FleetSnapshot:
    """Run the fleet; SIGINT or SIGTERM ends it early, with its summary."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    return await fleet.run(duration_s, stop, on_progress)


def run_sharded(
    config: SimRunConfig, on_progress: Callable[[FleetSnapshot], None] | None = None
) -> FleetSnapshot:
    """Run the fleet in `config.processes` processes and merge what they report."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [
        context.Process(target=_shard, args=(config, shard, out), name=f"sim-shard-{shard}")
        for shard in range(config.processes)
    ]
    for worker in workers:
        worker.start()
    latest: dict[int, FleetSnapshot] = {}
    finished: set[int] = set()
    failures: list[str] = []
    try:
        while len(finished) < len(workers):
            try:
                kind, shard, data = out.get(timeout=SHARD_POLL_S)
            except KeyboardInterrupt:
                continue  # the shards got the signal too: they stop and report
            except queue.Empty:
                dead = [i for i, w in enumerate(workers) if not w.is_alive() and i not in finished]
                for i in dead:
                    finished.add(i)
                    failures.append(f"shard {i} exited with status {workers[i].exitcode}")
                continue
            if kind == "failed":
                failures.append(f"shard {shard}: {data}")
                finished.add(shard)
                continue
            latest[shard] = FleetSnapshot.from_wire(data)
            if kind == "done":
                finished.add(shard)
            if on_progress is not None:
                on_progress(merge_snapshots(latest.values()))
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
    merged = merge_snapshots(latest.values())
    merged.errors += failures
    return merged


def merge_snapshots(snapshots: Any) -> FleetSnapshot:
    merged = FleetSnapshot()
    for snapshot in snapshots:
        merged.merge(snapshot)
    return merged


def run_simulation(
    config: SimRunConfig, on_progress: Callable[[FleetSnapshot], None] | None = None
) -> dict[str, Any]:
    """Run `config` and return its JSON summary."""
    if config.processes > 1:
        final = run_sharded(config, on_progress)
        _, _, faults = plan_run(config)
        played = [f for f in faults if f.at_s <= final.elapsed_s]
    else:
        final, played = run_in_process(config, on_progress)
    profile, blueprints, _ = plan_run(replace(config, duration_s=0))
    return summarize(config, profile, blueprints, final, played)


def summarize(
    config: SimRunConfig,
    profile: FleetProfile,
    blueprints: list[DeviceBlueprint],
    final: FleetSnapshot,
    played: list[FaultEvent],
) -> dict[str, Any]:
    names = {b.index: b.name for b in blueprints}
    traffic = final.traffic.summary()
    reports = traffic.get("report", {}).get("requests", 0)
    elapsed = max(final.elapsed_s, 1e-9)
    measured_s = max(final.elapsed_s - config.warmup_s, 1e-9)
    return {
        "profile": profile.name,
        "server": config.server_url,
        "devices": config.devices,
        "processes": config.processes,
        "duration_s": round(final.elapsed_s, 1),
        "seed": profile.seed if config.seed is None else config.seed,
        "devices_by_class": dict(Counter(b.device_class.name for b in blueprints)),
        "devices_by_region": dict(Counter(b.region.name for b in blueprints)),
        "phases": dict(final.phases),
        "enrollment": dict(final.enrollment),
        "installs": dict(final.installs),
        "traffic": traffic,
        "warmup_s": config.warmup_s,
        "measured_from_unix": final.measured_from_unix,
        "measured_s": round(measured_s, 1),
        "heartbeats_per_s": round(reports / measured_s, 2),
        "faults": [fault_to_document(f, names) for f in played[:500]],
        "faults_played": len(played),
        "agent_crashes": final.crashes,
        "simulator": {
            "cpu_s": round(final.cpu_s, 2),
            "max_rss_mb": round(final.max_rss_mb, 1),
            "cpu_percent_of_a_core": round(100 * final.cpu_s / elapsed, 1),
        },
        "errors": final.errors[:50],
    }
