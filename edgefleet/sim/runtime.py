"""Simulated processes: the agent's `Runtime` port for a virtual device.

Nothing is forked. `SimRuntime.spawn` recognises what the agent asks for and plays it on
the injected clock:

- the installer's sandbox check (`python -m edgefleet.agent.sandbox_check MODEL...`) takes
  the class's `sandbox_s` and writes one passing result line per model to its log, as the
  real child does, so the agent's own `sandbox.check_models` reads the verdict;
- a health-check command exits 0 while the service is up;
- anything else is the release's service: a simulated model server that comes up after
  `start_s`, answers the supervisor's HTTP health probe (through `probe_client()`, a
  `LocalHttp` that never opens a socket) with its `requests`/`errors` counters, serves
  Poisson-distributed requests with the class's latency distribution and error rate — or
  the bad model's, when its release (read from the slot it runs from) is a bad one — and
  pushes `inference.requests`, `inference.errors` and `inference.latency_ms` to the agent's
  StatsD endpoint over real loopback UDP, like the example inference workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import signal
import socket
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgefleet.agent.process_runtime import ProcessSpec
from edgefleet.agent.slots import MANIFEST as SLOT_MANIFEST
from edgefleet.clock import Clock
from edgefleet.errors import Unavailable
from edgefleet.sim.model_behaviour import BadModel, ModelBehaviour, is_bad_release, poisson, serve
from edgefleet.transport.messages import TransportResponse

log = logging.getLogger(__name__)

SANDBOX_MODULE = "edgefleet.agent.sandbox_check"
SERVE_TICK_S = 5.0  # how often a simulated server settles its requests and reports KPIs
LATENCY_LINES_PER_TICK = 20  # timings sent per tick at most (the rest as a sample rate)
_pids = itertools.count(200_000)


class StatsdSender:
    """One non-blocking UDP socket shared by every simulated workload of a process."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self.datagrams = 0

    def send(self, address: str, lines: Iterable[str]) -> None:
        host, _, port = address.rpartition(":")
        with contextlib.suppress(OSError, ValueError):
            self._socket.sendto("\n".join(lines).encode(), (host, int(port)))
            self.datagrams += 1

    def close(self) -> None:
        self._socket.close()


class SimProcess:
    """A `ProcessHandle` whose body is a coroutine on the simulation clock."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid = next(_pids)
        self.returncode: int | None = None
        self._exited = asyncio.Event()
        self._body: asyncio.Task[None] | None = None

    def start(self, body: Coroutine[Any, Any, None]) -> None:
        self._body = asyncio.create_task(body)

    def exit(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self._exited.set()
        if self._body is not None and not self._body.done():
            self._body.cancel()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    async def terminate(self, grace_s: float) -> int:
        self.exit(-signal.SIGTERM)
        if self._body is not None:
            await asyncio.gather(self._body, return_exceptions=True)
        assert self.returncode is not None
        return self.returncode


class ModelServer(SimProcess):
    """The release's service, simulated."""

    def __init__(self, spec: ProcessSpec, runtime: SimRuntime) -> None:
        super().__init__(spec.name)
        env = spec.env
        self.port = int(env["EDGEFLEET_SERVICE_PORT"]) if "EDGEFLEET_SERVICE_PORT" in env else None
        self.statsd = env.get("EDGEFLEET_STATSD")
        self.release = _slot_release(env.get("EDGEFLEET_SLOT"))
        self.bad = self.release is not None and is_bad_release(self.release, runtime.bad_releases)
        self.requests = 0
        self.errors = 0
        self.up = False
        self._runtime = runtime

    async def run(self) -> None:
        runtime = self._runtime
        behaviour, clock = runtime.behaviour, runtime.clock
        await clock.sleep(behaviour.start_s)
        self.up = True
        bad = runtime.bad_model if self.bad else None
        while True:
            await clock.sleep(SERVE_TICK_S)
            count = poisson(runtime.rng, behaviour.requests_per_s * SERVE_TICK_S)
            if not count:
                continue
            served = serve(
                behaviour, bad, count, runtime.rng, latency_samples=LATENCY_LINES_PER_TICK
            )
            self.requests += served.requests
            self.errors += served.errors
            if self.statsd:
                runtime.statsd.send(
                    self.statsd, _kpi_lines(served.requests, served.errors, served.latencies_ms)
                )


def _kpi_lines(requests: int, errors: int, latencies_ms: tuple[float, ...]) -> list[str]:
    lines = [f"inference.requests:{requests}|c"]
    if errors:
        lines.append(f"inference.errors:{errors}|c")
    if latencies_ms:
        rate = len(latencies_ms) / requests
        suffix = "" if rate >= 1 else f"|@{rate:.4f}"
        lines += [f"inference.latency_ms:{ms:.3f}|ms{suffix}" for ms in latencies_ms]
    return lines


def _slot_release(slot: str | None) -> str | None:
    """`name@version` of the release in a slot directory (what the service serves)."""
    if not slot:
        return None
    try:
        manifest = json.loads((Path(slot) / SLOT_MANIFEST).read_text())
        return f"{manifest['release']}@{manifest['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


class SimRuntime:
    """The processes of one virtual device."""

    def __init__(
        self,
        behaviour: ModelBehaviour,
        clock: Clock,
        rng: random.Random,
        statsd: StatsdSender,
        *,
        bad_model: BadModel | None = None,
        bad_releases: Iterable[str] = (),
    ) -> None:
        self.behaviour = behaviour
        self.clock = clock
        self.rng = rng
        self.statsd = statsd
        self.bad_model = bad_model or BadModel()
        self.bad_releases = tuple(bad_releases)
        self._processes: list[SimProcess] = []

    async def spawn(self, spec: ProcessSpec) -> SimProcess:
        self._processes = [p for p in self._processes if p.returncode is None]
        process: SimProcess
        if SANDBOX_MODULE in spec.command:
            process = SimProcess(spec.name)
            process.start(self._sandbox(process, spec))
        elif spec.name.endswith("-health"):
            process = SimProcess(spec.name)
            healthy = any(isinstance(p, ModelServer) and p.up for p in self.running())
            process.exit(0 if healthy else 1)
        else:
            server = ModelServer(spec, self)
            server.start(server.run())
            process = server
        self._processes.append(process)
        return process

    async def _sandbox(self, process: SimProcess, spec: ProcessSpec) -> None:
        await self.clock.sleep(self.behaviour.sandbox_s)
        models = list(spec.command[spec.command.index(SANDBOX_MODULE) + 1 :])
        lines = [json.dumps({"model": m, "ok": True, "stage": "done", "reason": "",
                             "outputs": {}, "run_ms": 1.0}) for m in models]  # fmt: skip
        if spec.log_path is not None:
            with spec.log_path.open("a") as log_file:
                log_file.write("".join(f"{line}\n" for line in lines))
        process.exit(0)

    def running(self) -> list[SimProcess]:
        return [p for p in self._processes if p.returncode is None]

    def server_on(self, port: int | None) -> ModelServer | None:
        for process in self.running():
            if isinstance(process, ModelServer) and process.port == port:
                return process
        return None

    def workload_cpu_percent(self) -> float:
        """The share of the machine the running model servers keep busy."""
        behaviour = self.behaviour
        busy = behaviour.requests_per_s * behaviour.latency.p50_ms / 1000
        servers = sum(isinstance(p, ModelServer) and p.up for p in self.running())
        return min(90.0, 100.0 * busy * servers)

    async def close(self) -> None:
        processes, self._processes = self._processes, []
        await asyncio.gather(*(p.terminate(0) for p in processes))

    def probe_client(self) -> SimProbes:
        """The client the agent's supervisor probes this device's services with."""
        return SimProbes(self)


class SimProbes:
    """The `LocalHttp` port of a virtual device: its simulated services answer health probes
    (and checkpoint hooks) without a socket; a port no service is up on refuses."""

    def __init__(self, runtime: SimRuntime) -> None:
        self._runtime = runtime

    def _server(self, method: str, url: str) -> ModelServer:
        server = self._runtime.server_on(urlsplit(url).port)
        if server is None or not server.up:
            raise Unavailable(f"{method} {url}: cannot connect: connection refused (simulated)")
        return server

    async def get(self, url: str, *, timeout_s: float) -> TransportResponse:
        server = self._server("GET", url)
        body = {"status": "ok", "reason": "", "requests": server.requests,
                "errors": server.errors, "model_path": server.release or ""}  # fmt: skip
        return TransportResponse(200, json.dumps(body).encode(),
                                 {"content-type": "application/json"})  # fmt: skip

    async def post(self, url: str, body: bytes = b"", *, timeout_s: float) -> TransportResponse:
        self._server("POST", url)
        return TransportResponse(200, b'{"status": "ok"}', {"content-type": "application/json"})

    async def aclose(self) -> None:
        pass
