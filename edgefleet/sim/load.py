"""`edgefleet sim load`: many light virtual devices against a real control plane, to
measure it (the full agent per device, `sim run`, stays for fidelity).

    run_load(settings, identities)
      ├─ one worker process per slice of the devices (spawned; each dies with this one,
      │  PR_SET_PDEATHSIG), or this process alone with workers=1
      │    └─ asyncio: one HttpDeviceLoop (load_http.py) or MqttDeviceLoop (load_mqtt.py)
      │       per device, started over the ramp; each keeps its own connections and signs
      │       with its own key
      └─ merge the workers' LoadStats ─▶ summary(): devices, reports sent / failed,
         telemetry, latency percentiles per request kind, desired-state update times

A process holds at most RLIMIT_NOFILE sockets (20,000 on many hosts), and one loopback
source address at most ~28,000 connections to one server port (the ephemeral range): a
run spreads its devices over enough workers and source addresses (127.0.0.0/8) for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import queue
import resource
import signal
import time
from collections.abc import Sequence
from typing import Any

from edgefleet.errors import InvalidInput
from edgefleet.parent_death import death_signal_setter
from edgefleet.sim.load_device import Identity, LoadDevice
from edgefleet.sim.load_http import HttpDeviceLoop
from edgefleet.sim.load_mqtt import MqttDeviceLoop
from edgefleet.sim.load_stats import LoadSettings, LoadStats, LoadTransport
from edgefleet.transport.http_wire import split_url
from edgefleet.transport.mqtt_client import BrokerUrl

CONNECTIONS_PER_DEVICE = {LoadTransport.HTTP: 2, LoadTransport.MQTT: 1}
SOCKETS_PER_WORKER = 18_000  # under a 20,000 file limit, with room for the rest
CONNECTIONS_PER_SOURCE = 25_000  # under the ~28,000 ephemeral ports of one address
WORKER_POLL_S = 1.0
PROGRESS_INTERVAL_S = 0.25
STOP_GRACE_S = 90.0  # longer than any one exchange may take (enrollment: 60 s)


def plan_workers(devices: int, transport: LoadTransport, asked: int | None) -> int:
    """Worker processes for `devices`: as asked, else enough for the file limit.

    >>> plan_workers(20_000, LoadTransport.HTTP, None)
    3
    """
    if asked is not None:
        return asked
    return max(1, math.ceil(devices * CONNECTIONS_PER_DEVICE[transport] / SOCKETS_PER_WORKER))


def plan_source_addresses(devices: int, transport: LoadTransport, host: str) -> tuple[str, ...]:
    """Loopback source addresses enough for every device's connections; none (the
    system's choice) when the server is not on loopback.

    >>> plan_source_addresses(20_000, LoadTransport.HTTP, "127.0.0.1")
    ('127.0.0.2', '127.0.0.3')
    """
    if not host.startswith("127."):
        return ()
    count = math.ceil(devices * CONNECTIONS_PER_DEVICE[transport] / CONNECTIONS_PER_SOURCE)
    return tuple(f"127.0.{1 + i // 250}.{2 + i % 250}" if i >= 250 else f"127.0.0.{2 + i}"
                 for i in range(count))  # fmt: skip


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def run_devices(
    settings: LoadSettings, identities: Sequence[tuple[int, Identity]], stop: asyncio.Event
) -> LoadStats:
    """Run these devices (index, identity) until `stop` is set or the duration is over."""
    stats = LoadStats(enroll_concurrency=settings.enroll_concurrency)
    origin, _ = split_url(settings.server_url)
    broker = None
    if settings.transport is LoadTransport.MQTT:
        try:
            broker = BrokerUrl.parse(settings.mqtt_url or "")
        except ValueError as e:
            raise InvalidInput(f"--mqtt: {e}") from None
    sources = settings.source_addresses
    cpu_before = _process_cpu_s()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.duration_s
    loop.call_at(deadline, stop.set)
    if settings.warmup_s:
        loop.call_later(settings.warmup_s, stats.traffic.reset)
    progress = None
    if settings.progress_path is not None:
        progress = asyncio.create_task(_write_progress(settings.progress_path, stats, stop))
    tasks: list[asyncio.Task[None]] = []
    step_s = settings.ramp_s / max(1, len(identities))
    for n, (index, identity) in enumerate(identities):
        device = LoadDevice(identity, settings.seed)
        source = sources[index % len(sources)] if sources else None
        device_loop = (
            HttpDeviceLoop(device, origin, source, settings, stats, stop)
            if broker is None
            else MqttDeviceLoop(device, origin, broker, source, settings, stats, stop)
        )
        tasks.append(asyncio.create_task(device_loop.run(), name=identity.name))
        if step_s and n + 1 < len(identities):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), step_s)
            if stop.is_set():
                break
    await stop.wait()
    # Every device ends its exchange in flight and stops; one that has not within the grace
    # period is cancelled and counted (a run never outlives its duration by much).
    _, late = await asyncio.wait(tasks, timeout=STOP_GRACE_S) if tasks else (set(), set())
    for task in late:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    if progress is not None:
        await progress
    if late:
        stats.errors[f"device loop still running {STOP_GRACE_S:.0f} s after the end"] += len(late)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException) and task not in late:
            stats.errors[f"device loop crashed: {type(result).__name__}: {result}"[:200]] += 1
    stats.cpu_s = _process_cpu_s() - cpu_before
    return stats


async def _write_progress(path: str, stats: LoadStats, stop: asyncio.Event) -> None:
    """Every PROGRESS_INTERVAL_S until the run stops, this process's counts as one JSON line (a
    benchmark sets them against what the server stored)."""
    with open(path, "a", buffering=1) as out:  # one write per line: lines never interleave
        while True:
            out.write(json.dumps({"t": round(time.time(), 3), "pid": os.getpid(),
                                  "reports_sent": stats.reports_sent,
                                  "reports_failed": stats.reports_failed,
                                  "telemetry_sent": stats.telemetry_sent}) + "\n")  # fmt: skip
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROGRESS_INTERVAL_S)


def _run_here(settings: LoadSettings, identities: Sequence[tuple[int, Identity]]) -> LoadStats:
    async def main() -> LoadStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        return await run_devices(settings, identities, stop)

    _raise_file_limit()
    return asyncio.run(main())


def _worker(
    settings: LoadSettings, identities: list[tuple[int, Identity]], out: Any, parent: int
) -> None:
    """A worker process: dies with the parent, reports its stats (or its failure)."""
    arm = death_signal_setter()
    if arm is not None:
        arm()
    if os.getppid() != parent:
        os._exit(1)
    try:
        out.put(("done", _run_here(settings, identities).to_wire()))
    except Exception as e:  # reported to the parent, which names it
        out.put(("failed", f"{type(e).__name__}: {e}"))


def _run_workers(settings: LoadSettings, identities: list[Identity]) -> LoadStats:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    slices = [[(i, identity) for i, identity in enumerate(identities)
               if i % settings.workers == w] for w in range(settings.workers)]  # fmt: skip
    workers = [context.Process(target=_worker, args=(settings, part, out, os.getpid()),
                               name=f"sim-load-{w}") for w, part in enumerate(slices)]  # fmt: skip
    for worker in workers:
        worker.start()
    merged = LoadStats()
    pending = len(workers)
    try:
        while pending:
            try:
                kind, data = out.get(timeout=WORKER_POLL_S)
            except KeyboardInterrupt:
                continue  # the workers got the signal too: they stop and report
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    merged.errors["a worker exited without reporting"] += pending
                    break
                continue
            pending -= 1
            if kind == "failed":
                merged.errors[f"worker failed: {data}"[:200]] += 1
            else:
                merged.merge(LoadStats.from_wire(data))
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    return merged


def run_load(settings: LoadSettings, identities: list[Identity]) -> dict[str, Any]:
    """Run the load and return its summary."""
    started = time.monotonic()
    if settings.workers > 1:
        stats = _run_workers(settings, identities)
    else:
        stats = _run_here(settings, list(enumerate(identities)))
    return summarize(settings, stats, time.monotonic() - started)


def summarize(settings: LoadSettings, stats: LoadStats, elapsed_s: float) -> dict[str, Any]:
    traffic = stats.traffic.summary()
    return {
        "server": settings.server_url,
        "transport": settings.transport.value,
        "devices": settings.devices,
        "workers": settings.workers,
        "source_addresses": list(settings.source_addresses),
        "heartbeat_interval_s": settings.heartbeat_interval_s,
        "presence": settings.presence and settings.transport is LoadTransport.MQTT,
        "warmup_s": settings.warmup_s,
        "duration_s": round(elapsed_s, 1),
        "enrolled": stats.enrolled,
        "enroll_failed": stats.enroll_failed,
        "online": stats.online,
        "reports_sent": stats.reports_sent,
        "reports_failed": stats.reports_failed,
        "telemetry_sent": stats.telemetry_sent,
        "telemetry_failed": stats.telemetry_failed,
        "desired_updates": len(stats.desired_updates),
        "desired_update_times_unix": sorted(stats.desired_updates),
        "traffic": traffic,
        "generator_cpu_s": round(stats.cpu_s, 2),
        "generator_cpu_percent_of_a_core": round(100 * stats.cpu_s / max(elapsed_s, 1e-9), 1),
        "errors": dict(stats.errors.most_common(20)),
    }
