"""Supervisor: keeps the agent's services running, restarts them, and checks their health.

One asyncio task per service runs its lifecycle::

    ensure ─▶ starting ──first healthy probe (or no health check)──▶ running
                 ▲   │                                                 │
                 │   └──────────────── exit, or too many failing probes ┤ (restart_on_failure)
                 │                                                     ▼
                 └──────── delay from edgefleet.core.updates.restart_policy ◀─ backoff ──▶ stopped
                                                                        (policy says no)
    stop / stop_all ─▶ SIGTERM to the process group, SIGKILL after stop_grace_s ─▶ stopped

Processes are started through the `Runtime` port and every wait goes through the injected
`Clock`, so the simulator can drive a supervisor with fake processes and fake time. HTTP
health checks go through a `LocalHttp` client that can be injected too (in the simulator
the simulated service answers, without a socket). A health check is an HTTP GET (any 2xx
is healthy; a JSON body with integer `requests` and `errors` counters is passed on, the
installer computes an error rate from them) or a command (exit code 0 is healthy).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefleet.agent.process_runtime import ProcessHandle, ProcessSpec, Runtime
from edgefleet.clock import Clock
from edgefleet.core.updates.restart_policy import RestartPolicy, decide_restart, describe_exit
from edgefleet.errors import InvalidInput, NotFound, Unavailable

if TYPE_CHECKING:
    from edgefleet.transport.http_client import LocalHttp

log = logging.getLogger(__name__)

# While a service starts, probe at least this often so it is seen running soon after it is.
STARTING_PROBE_INTERVAL_S = 0.5
_DETAIL_CHARS = 200
# A health answer is a small JSON document: a longer body is a failing probe.
MAX_PROBE_BODY_BYTES = 1024 * 1024


class ServiceState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class HealthState(StrEnum):
    OK = "ok"
    FAILING = "failing"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class HealthCheckSpec:
    """Exactly one of `http_url` and `command`.

    Probes that fail during the first `start_period_s` only delay `running`; after it (or
    once the service was healthy) `failure_threshold` failures in a row restart the service
    when `restart_on_failure` is set, and are only reported otherwise.
    """

    http_url: str | None = None
    command: Sequence[str] = ()
    interval_s: float = 5.0
    timeout_s: float = 2.0
    failure_threshold: int = 3
    restart_on_failure: bool = False
    start_period_s: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", tuple(self.command))
        if (self.http_url is None) == (not self.command):
            raise ValueError("a health check is either an HTTP URL or a command")
        if self.interval_s <= 0 or self.timeout_s <= 0 or self.failure_threshold < 1:
            raise ValueError("health check interval_s, timeout_s and failure_threshold > 0")


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    log_path: Path | None = None
    health: HealthCheckSpec | None = None
    memory_limit_mb: int | None = None
    cpu_seconds_limit: int | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace_s: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "env", dict(self.env))

    def process_spec(self) -> ProcessSpec:
        return ProcessSpec(
            name=self.name,
            command=self.command,
            env=self.env,
            cwd=self.cwd,
            log_path=self.log_path,
            memory_limit_mb=self.memory_limit_mb,
            cpu_seconds_limit=self.cpu_seconds_limit,
        )


@dataclass(frozen=True)
class HealthProbe:
    """The result of one health check; `requests`/`errors` when the service reports them;
    `reached` when the service answered (an HTTP response of any status, a command check
    that passed), False while nothing answers (not listening yet)."""

    health: HealthState
    detail: str
    requests: int | None = None
    errors: int | None = None
    reached: bool = True


NOT_PROBED = HealthProbe(HealthState.UNKNOWN, "not probed yet")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: ServiceState
    pid: int | None
    restarts: int  # automatic restarts since the last ensure() or restart()
    last_exit_code: int | None
    last_health: HealthProbe
    since: datetime  # when `state` was entered
    detail: str  # why it is in this state, e.g. the last exit and the restart delay
    last_exit_reason: str = ""  # how the process last ended and what the policy decided


class _Service:
    def __init__(self, spec: ServiceSpec, now: datetime) -> None:
        self.spec = spec
        self.state = ServiceState.STOPPED
        self.since = now
        self.detail = "not started"
        self.handle: ProcessHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.failures = 0
        self.last_exit_code: int | None = None
        self.last_exit_reason = ""
        self.last_health = NOT_PROBED
        # Stopped by request or by a supervisor failure: ensure() starts it again. (A process
        # that finished under a restart policy that says no is left alone.)
        self.start_on_ensure = False


class Supervisor:
    def __init__(
        self,
        runtime: Runtime,
        clock: Clock,
        rng: random.Random,
        *,
        http_client: LocalHttp | None = None,
    ) -> None:
        self._runtime = runtime
        self._clock = clock
        self._rng = rng
        self._owns_client = http_client is None
        # Made on the first HTTP probe: an idle agent does not hold its TLS context.
        self._http_client = http_client
        self._services: dict[str, _Service] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- commands ---------------------------------------------------------------------------

    async def ensure(self, spec: ServiceSpec) -> ServiceStatus:
        """Start the service, or restart it if `spec` differs from the one it runs with."""
        async with self._lock(spec.name):
            service = self._services.get(spec.name)
            if service is not None and service.spec == spec:
                if service.task is None and service.start_on_ensure:
                    self._start(service)
                return self._status_of(service)
            if service is not None:
                log.info("service spec changed; restarting", extra={"service": spec.name})
                await self._stop(service, "spec changed")
            service = _Service(spec, self._clock.now())
            self._services[spec.name] = service
            self._start(service)
            return self._status_of(service)

    async def restart(self, name: str) -> ServiceStatus:
        """Stop the service and start it again at once (no backoff; counters reset)."""
        async with self._lock(name):
            service = self._get(name)
            await self._stop(service, "restart requested")
            self._start(service)
            return self._status_of(service)

    async def stop(self, name: str) -> ServiceStatus:
        """Stop the service; it stays known (state `stopped`) until ensure() starts it."""
        async with self._lock(name):
            service = self._get(name)
            await self._stop(service, "stopped by request")
            return self._status_of(service)

    async def remove(self, name: str) -> None:
        """Stop the service and forget it."""
        async with self._lock(name):
            await self._stop(self._get(name), "removed")
            del self._services[name]

    async def stop_all(self) -> None:
        """Stop every service (in parallel); no process started here is left running."""
        await asyncio.gather(*(self.stop(name) for name in list(self._services)))

    async def aclose(self) -> None:
        await self.stop_all()
        if self._owns_client and self._http_client is not None:
            await self._http_client.aclose()
            self._http_client = None

    @property
    def http(self) -> LocalHttp:
        """The client of HTTP health probes (and of the workloads' checkpoint hooks)."""
        if self._http_client is None:
            from edgefleet.transport.http_client import HttpClient

            self._http_client = HttpClient(max_body_bytes=MAX_PROBE_BODY_BYTES)
        return self._http_client

    # -- queries ----------------------------------------------------------------------------

    def status(self, name: str) -> ServiceStatus:
        return self._status_of(self._get(name))

    def statuses(self) -> dict[str, ServiceStatus]:
        return {name: self._status_of(s) for name, s in sorted(self._services.items())}

    async def probe(self, name: str) -> HealthProbe:
        """Run the service's health check once now, and record the result."""
        service = self._get(name)
        result = await self._probe(service)
        service.last_health = result
        return result

    # -- lifecycle --------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _get(self, name: str) -> _Service:
        try:
            return self._services[name]
        except KeyError:
            raise NotFound(f"no service named {name!r}", code="unknown_service") from None

    def _status_of(self, service: _Service) -> ServiceStatus:
        handle = service.handle
        running = handle is not None and handle.returncode is None
        return ServiceStatus(
            name=service.spec.name,
            state=service.state,
            pid=handle.pid if running and handle is not None else None,
            restarts=service.restarts,
            last_exit_code=service.last_exit_code,
            last_health=service.last_health,
            since=service.since,
            detail=service.detail,
            last_exit_reason=service.last_exit_reason,
        )

    def _enter(self, service: _Service, state: ServiceState, detail: str) -> None:
        if state is not service.state:
            service.since = self._clock.now()
        service.state, service.detail = state, detail
        log.info("service %s", state, extra={"service": service.spec.name, "detail": detail})

    def _start(self, service: _Service) -> None:
        service.start_on_ensure = False
        service.restarts = service.failures = 0
        service.last_health = NOT_PROBED
        self._enter(service, ServiceState.STARTING, "starting")
        service.task = asyncio.create_task(
            self._supervise(service), name=f"supervise-{service.spec.name}"
        )
        service.task.add_done_callback(lambda task: self._on_supervise_done(service, task))

    def _on_supervise_done(self, service: _Service, task: asyncio.Task[None]) -> None:
        # A bug (or a Runtime raising something other than OSError) must not leave the
        # service looking like it is starting forever.
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("supervising failed", exc_info=error, extra={"service": service.spec.name})
        if service.task is task:
            service.task = None
            service.start_on_ensure = True
        self._enter(service, ServiceState.STOPPED, f"supervisor failed: {error!r}")

    async def _stop(self, service: _Service, why: str) -> None:
        service.start_on_ensure = True
        task, service.task = service.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        handle = service.handle
        if handle is not None:
            was_running = handle.returncode is None
            exit_code = await handle.terminate(service.spec.stop_grace_s)
            if was_running:
                service.last_exit_code = exit_code
        self._enter(service, ServiceState.STOPPED, why)

    async def _supervise(self, service: _Service) -> None:
        spec = service.spec
        while True:
            self._enter(service, ServiceState.STARTING, "starting")
            started_s = self._clock.monotonic()
            exit_code, why = await self._run_once(service)
            ran_for_s = self._clock.monotonic() - started_s
            service.last_exit_code = exit_code
            decision = decide_restart(
                spec.restart,
                failures=service.failures,
                ran_for_s=ran_for_s,
                exit_code=exit_code,
                rng=self._rng,
            )
            service.failures = decision.failures
            detail = f"{why}: {decision.reason}" if why else decision.reason
            service.last_exit_reason = detail
            if not decision.restart:
                self._enter(service, ServiceState.STOPPED, detail)
                return
            self._enter(service, ServiceState.BACKOFF, detail)
            await self._clock.sleep(decision.delay_s)
            service.restarts += 1

    async def _run_once(self, service: _Service) -> tuple[int, str]:
        """Start the process and wait until it exits or its health check gives up on it.

        Returns the exit code and, when the supervisor ended the process, why.
        """
        spawning = asyncio.ensure_future(self._runtime.spawn(service.spec.process_spec()))
        try:
            service.handle = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # Stopped while starting: keep the handle so that _stop() terminates the process.
            with contextlib.suppress(Exception):
                service.handle = await spawning
            raise
        except OSError as e:
            # A command that cannot start is a crash loop like any other: back off.
            service.handle = None
            return 127, f"cannot start: {e.strerror or e}"
        handle = service.handle
        if service.spec.health is None:
            self._enter(service, ServiceState.RUNNING, "running")
        waiter = asyncio.ensure_future(handle.wait())
        watcher = asyncio.ensure_future(self._watch_health(service, handle))
        try:
            done, _ = await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                exit_code, why = waiter.result(), ""
            else:
                why = watcher.result()
                exit_code = await handle.terminate(service.spec.stop_grace_s)
        finally:
            for task in (waiter, watcher):
                task.cancel()
            await asyncio.gather(waiter, watcher, return_exceptions=True)
        # The leader is gone; children it left behind in its group must not outlive it.
        await handle.terminate(0)
        log.warning(
            "service exited",
            extra={"service": service.spec.name, "exit": describe_exit(exit_code)},
        )
        return exit_code, why

    async def _watch_health(self, service: _Service, handle: ProcessHandle) -> str:
        """Probe while the process runs; return a reason when it should be restarted."""
        check = service.spec.health
        if check is None:
            await asyncio.Event().wait()  # nothing to watch: wait to be cancelled
            raise AssertionError("unreachable")
        started_s = self._clock.monotonic()
        failures = 0
        while True:
            starting = service.state is ServiceState.STARTING
            await self._clock.sleep(
                min(check.interval_s, STARTING_PROBE_INTERVAL_S) if starting else check.interval_s
            )
            if handle.returncode is not None:
                await asyncio.Event().wait()  # the waiter reports the exit
            result = await self._probe(service)
            service.last_health = result
            if result.health is HealthState.OK:
                failures = 0
                if service.state is ServiceState.STARTING:
                    self._enter(service, ServiceState.RUNNING, "running; health check passed")
                continue
            in_start_period = self._clock.monotonic() - started_s < check.start_period_s
            if service.state is ServiceState.STARTING and in_start_period:
                continue
            failures += 1
            if check.restart_on_failure and failures >= check.failure_threshold:
                return f"health check failed {failures} times ({result.detail})"

    # -- health checks ----------------------------------------------------------------------

    async def _probe(self, service: _Service) -> HealthProbe:
        check = service.spec.health
        if check is None:
            return HealthProbe(HealthState.UNKNOWN, "no health check")
        if check.http_url is not None:
            return await self._probe_http(check.http_url, check.timeout_s)
        return await self._probe_command(service.spec, check)

    async def _probe_http(self, url: str, timeout_s: float) -> HealthProbe:
        try:
            response = await self.http.get(url, timeout_s=timeout_s)
        except (Unavailable, InvalidInput) as e:
            detail = e.message if e.message.startswith("GET ") else f"GET {url}: {e.message}"
            return HealthProbe(HealthState.FAILING, detail[:_DETAIL_CHARS], reached=False)
        body = _json_object(response.body)
        requests, errors = _counter(body, "requests"), _counter(body, "errors")
        status = response.status
        if 200 <= status < 300:
            return HealthProbe(HealthState.OK, f"HTTP {status}", requests, errors)
        reason = body.get("reason")
        text = reason if isinstance(reason, str) else response.body.decode("utf-8", "replace")
        text = " ".join(text.split())
        detail = f"HTTP {status}: {text}" if text else f"HTTP {status}"
        return HealthProbe(HealthState.FAILING, detail[:_DETAIL_CHARS], requests, errors)

    async def _probe_command(self, spec: ServiceSpec, check: HealthCheckSpec) -> HealthProbe:
        probe_spec = ProcessSpec(
            name=f"{spec.name}-health",
            command=check.command,
            env=spec.env,
            cwd=spec.cwd,
            log_path=spec.log_path,
        )
        try:
            handle = await self._runtime.spawn(probe_spec)
        except OSError as e:
            return HealthProbe(HealthState.FAILING, f"health command cannot start: {e.strerror}",
                               reached=False)  # fmt: skip
        try:
            exit_code = await self._wait_at_most(handle, check.timeout_s)
        finally:
            await handle.terminate(0)
        if exit_code is None:
            return HealthProbe(
                HealthState.FAILING,
                f"health command timed out after {check.timeout_s:g} s",
                reached=False,
            )
        if exit_code == 0:
            return HealthProbe(HealthState.OK, "health command exited with exit code 0")
        return HealthProbe(
            HealthState.FAILING,
            f"health command exited with {describe_exit(exit_code)}",
            reached=False,
        )

    async def _wait_at_most(self, handle: ProcessHandle, timeout_s: float) -> int | None:
        """The exit code, or None if the process is still running after `timeout_s`."""
        waiter = asyncio.ensure_future(handle.wait())
        timer = asyncio.ensure_future(self._clock.sleep(timeout_s))
        try:
            await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
            return waiter.result() if waiter.done() else None
        finally:
            for task in (waiter, timer):
                task.cancel()
            await asyncio.gather(waiter, timer, return_exceptions=True)


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _counter(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    # bool is an int to Python, but `true` is no count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None
