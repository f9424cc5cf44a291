"""The process runtime and the supervisor, with real processes on this machine."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from edgefleet.agent.process_runtime import HostRuntime, ProcessHandle, ProcessSpec
from edgefleet.agent.supervisor import (
    HealthCheckSpec,
    HealthState,
    ServiceSpec,
    ServiceState,
    Supervisor,
)
from edgefleet.clock import SystemClock
from edgefleet.core.updates.restart_policy import RestartPolicy
from edgefleet.errors import NotFound

pytestmark = pytest.mark.anyio
PY = sys.executable
SLEEPER = [PY, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SteerableClock(SystemClock):
    """Real time, except that sleeps are recorded and cut short, and the monotonic clock can
    be pushed forward: a crash loop's minutes of backoff pass in milliseconds."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.offset_s = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset_s

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(min(seconds, 0.02))


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie nobody reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def eventually(condition: Callable[[], object], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def runtime() -> AsyncIterator[HostRuntime]:
    runtime = HostRuntime(close_grace_s=1.0)
    yield runtime
    await runtime.close()


# -- the runtime ----------------------------------------------------------------------------


async def test_output_is_appended_to_the_log(runtime: HostRuntime, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "hello.log"
    for word in ("first", "second"):
        spec = ProcessSpec(
            "hello",
            [PY, "-c", f"import sys; print('{word}'); print('err', file=sys.stderr)"],
            log_path=log,
        )
        assert await (await runtime.spawn(spec)).wait() == 0
    assert log.read_text().split() == ["first", "err", "second", "err"]


async def test_environment_and_working_directory(runtime: HostRuntime, tmp_path: Path) -> None:
    spec = ProcessSpec(
        "env",
        [PY, "-c", "import os; print(os.environ['EDGE_X'], os.getcwd())"],
        env={"EDGE_X": "42"},
        cwd=tmp_path,
        log_path=tmp_path / "out.log",
    )
    await (await runtime.spawn(spec)).wait()
    assert (tmp_path / "out.log").read_text().split() == ["42", str(tmp_path)]


async def test_memory_limit_makes_big_allocations_fail(
    runtime: HostRuntime, tmp_path: Path
) -> None:
    spec = ProcessSpec(
        "hog",
        [PY, "-c", "b = bytearray(1024 * 1024 * 1024)"],
        log_path=tmp_path / "hog.log",
        memory_limit_mb=256,
    )
    assert await (await runtime.spawn(spec)).wait() == 1
    assert "MemoryError" in (tmp_path / "hog.log").read_text()


async def test_cpu_limit_kills_a_busy_process(runtime: HostRuntime) -> None:
    spec = ProcessSpec("spin", [PY, "-c", "while True: pass"], cpu_seconds_limit=1)
    exit_code = await (await runtime.spawn(spec)).wait()
    assert exit_code in (-signal.SIGXCPU, -signal.SIGKILL)


async def test_terminate_kills_the_whole_group_even_when_sigterm_is_ignored(
    runtime: HostRuntime, tmp_path: Path
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    spec = ProcessSpec("stubborn", stubborn_parent(pid_file))
    handle = await runtime.spawn(spec)
    await eventually(pid_file.exists)
    grandchild = int(pid_file.read_text())
    assert await handle.terminate(grace_s=0.2) == -signal.SIGKILL
    await eventually(lambda: not alive(grandchild))
    assert not alive(handle.pid)


async def test_close_stops_every_process_started(tmp_path: Path) -> None:
    runtime = HostRuntime(close_grace_s=1.0)
    handles = [await runtime.spawn(ProcessSpec(f"s{i}", SLEEPER)) for i in range(3)]
    assert len(runtime.running()) == 3
    await runtime.close()
    assert all(h.returncode == -signal.SIGTERM for h in handles)
    assert not any(alive(h.pid) for h in handles)


async def test_a_missing_command_is_an_os_error(runtime: HostRuntime) -> None:
    with pytest.raises(FileNotFoundError):
        await runtime.spawn(ProcessSpec("ghost", ["/nonexistent/ghost"]))


def stubborn_parent(pid_file: Path) -> list[str]:
    """A process that ignores SIGTERM and has a child of its own (which writes `pid_file`)."""
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    return [PY, "-c", code]


# -- the supervisor -------------------------------------------------------------------------


async def test_ensure_starts_and_is_idempotent_and_a_new_spec_restarts(
    runtime: HostRuntime,
) -> None:
    async with Supervisor(runtime, SystemClock(), random.Random(0)) as supervisor:
        spec = ServiceSpec("svc", SLEEPER, env={"VERSION": "1"})
        status = await supervisor.ensure(spec)
        assert status.state is ServiceState.STARTING
        await eventually(lambda: supervisor.status("svc").pid is not None)
        first = supervisor.status("svc")
        assert first.state is ServiceState.RUNNING  # no health check: running once started
        assert first.last_health.health is HealthState.UNKNOWN

        again = await supervisor.ensure(ServiceSpec("svc", list(SLEEPER), env={"VERSION": "1"}))
        assert again.pid == first.pid

        await supervisor.ensure(replace(spec, env={"VERSION": "2"}))
        await eventually(lambda: supervisor.status("svc").pid not in (None, first.pid))
        assert first.pid is not None and not alive(first.pid)
        assert supervisor.status("svc").restarts == 0


async def test_crash_loop_backs_off_exponentially_and_resets_after_stable_running(
    runtime: HostRuntime, tmp_path: Path
) -> None:
    # Exits with 3 on its first three starts, then keeps running.
    counter = tmp_path / "starts"
    code = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\n"
        "sys.exit(3) if n < 3 else time.sleep(60)\n"
    )
    clock = SteerableClock()
    policy = RestartPolicy(base_delay_s=1.0, max_delay_s=60.0, stable_after_s=30.0)
    async with Supervisor(runtime, clock, random.Random(0)) as supervisor:
        await supervisor.ensure(ServiceSpec("flaky", [PY, "-c", code], restart=policy))
        await eventually(
            lambda: (
                supervisor.status("flaky").restarts == 3
                and supervisor.status("flaky").state is ServiceState.RUNNING
            )
        )
        status = supervisor.status("flaky")
        assert status.last_exit_code == 3
        assert status.last_exit_reason.startswith("exited with exit code 3 after")
        assert "restart 3 in" in status.last_exit_reason
        delays = list(clock.sleeps)
        assert len(delays) == 3
        for attempt, delay in enumerate(delays):
            assert 2.0**attempt / 2 <= delay <= 2.0**attempt

        # Stable for longer than stable_after_s: the next crash waits the shortest delay.
        clock.offset_s += 100.0
        assert status.pid is not None
        os.kill(status.pid, signal.SIGKILL)
        await eventually(lambda: len(clock.sleeps) == 4)
        assert 0.5 <= clock.sleeps[-1] <= 1.0
        assert "signal SIGKILL" in supervisor.status("flaky").last_exit_reason
        await eventually(lambda: supervisor.status("flaky").restarts == 4)


async def test_a_command_that_cannot_start_backs_off(runtime: HostRuntime) -> None:
    clock = SteerableClock()
    async with Supervisor(runtime, clock, random.Random(0)) as supervisor:
        await supervisor.ensure(ServiceSpec("ghost", ["/nonexistent/ghost"]))
        await eventually(lambda: supervisor.status("ghost").restarts >= 2)
        status = supervisor.status("ghost")
        assert status.last_exit_reason.startswith("cannot start: No such file or directory")
        stopped = await supervisor.stop("ghost")
        assert stopped.state is ServiceState.STOPPED


async def test_stop_all_leaves_no_process_behind(runtime: HostRuntime, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    async with Supervisor(runtime, SystemClock(), random.Random(0)) as supervisor:
        await supervisor.ensure(
            ServiceSpec("stubborn", stubborn_parent(pid_file), stop_grace_s=0.2)
        )
        await supervisor.ensure(ServiceSpec("plain", SLEEPER))
        await eventually(pid_file.exists)
        await eventually(lambda: all(s.pid for s in supervisor.statuses().values()))
        pids = [s.pid for s in supervisor.statuses().values()] + [int(pid_file.read_text())]

        await supervisor.stop_all()

        statuses = supervisor.statuses()
        assert {s.state for s in statuses.values()} == {ServiceState.STOPPED}
        assert statuses["stubborn"].last_exit_code == -signal.SIGKILL
        assert statuses["plain"].last_exit_code == -signal.SIGTERM
        await eventually(lambda: not any(alive(pid) for pid in pids if pid is not None))
        assert None not in pids

        # Stopped services come back with ensure().
        await supervisor.ensure(ServiceSpec("plain", SLEEPER))
        await eventually(lambda: supervisor.status("plain").pid is not None)


class BrokenRuntime:
    async def spawn(self, spec: ProcessSpec) -> ProcessHandle:
        raise RuntimeError("driver exploded")

    async def close(self) -> None:
        pass  # it never started anything


async def test_a_failing_runtime_stops_the_service_with_the_reason() -> None:
    async with Supervisor(BrokenRuntime(), SystemClock(), random.Random(0)) as supervisor:
        await supervisor.ensure(ServiceSpec("svc", SLEEPER))
        await eventually(lambda: supervisor.status("svc").state is ServiceState.STOPPED)
        status = supervisor.status("svc")
        assert status.detail == "supervisor failed: RuntimeError('driver exploded')"
        # ensure() of the same spec tries again.
        assert (await supervisor.ensure(ServiceSpec("svc", SLEEPER))).state is (
            ServiceState.STARTING
        )


async def test_unknown_service_is_not_found(runtime: HostRuntime) -> None:
    async with Supervisor(runtime, SystemClock(), random.Random(0)) as supervisor:
        with pytest.raises(NotFound):
            supervisor.status("nope")
        with pytest.raises(NotFound):
            await supervisor.restart("nope")


# -- health checks --------------------------------------------------------------------------

HEALTH_SERVER = """
import http.server, json, sys
status = int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"requests": 7, "errors": 2, "reason": "model warming up"}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def http_service(name: str, status: int) -> ServiceSpec:
    """A service whose health endpoint answers `status` with a JSON body of counters."""
    port = free_port()
    check = HealthCheckSpec(
        http_url=f"http://127.0.0.1:{port}/healthz", interval_s=0.1, timeout_s=1.0
    )
    return ServiceSpec(name, [PY, "-c", HEALTH_SERVER, str(port), str(status)], health=check)


async def test_http_health_check_passes_with_counters(runtime: HostRuntime) -> None:
    spec = http_service("web", 200)
    async with Supervisor(runtime, SystemClock(), random.Random(0)) as supervisor:
        await supervisor.ensure(spec)
        await eventually(lambda: supervisor.status("web").state is ServiceState.RUNNING)
        assert supervisor.status("web").last_health.health is HealthState.OK
        probe = await supervisor.probe("web")
        assert (probe.health, probe.detail) == (HealthState.OK, "HTTP 200")
        assert (probe.requests, probe.errors) == (7, 2)


async def test_failing_http_health_check_reports_the_reason(runtime: HostRuntime) -> None:
    spec = http_service("sick", 503)
    async with Supervisor(runtime, SystemClock(), random.Random(0)) as supervisor:
        refused = await supervisor.ensure(spec)
        assert refused.last_health.health is HealthState.UNKNOWN
        probe = await supervisor.probe("sick")  # nothing listens yet, most likely
        assert probe.health is HealthState.FAILING
        await eventually(lambda: "HTTP 503" in supervisor.status("sick").last_health.detail)
        status = supervisor.status("sick")
        assert status.state is ServiceState.STARTING  # never healthy, so never running
        assert status.last_health.detail == "HTTP 503: model warming up"
        assert (status.last_health.requests, status.last_health.errors) == (7, 2)


async def test_command_health_checks(runtime: HostRuntime) -> None:
    def service(name: str, command: list[str]) -> ServiceSpec:
        check = HealthCheckSpec(command=command, interval_s=0.05, timeout_s=0.3)
        return ServiceSpec(name, SLEEPER, health=check)

    async with Supervisor(runtime, SystemClock(), random.Random(0)) as supervisor:
        await supervisor.ensure(service("good", ["true"]))
        await supervisor.ensure(service("bad", [PY, "-c", "raise SystemExit(3)"]))
        await supervisor.ensure(service("hung", ["sleep", "30"]))
        await eventually(lambda: supervisor.status("good").state is ServiceState.RUNNING)
        assert (await supervisor.probe("bad")).detail == "health command exited with exit code 3"
        hung = await supervisor.probe("hung")
        assert (hung.health, hung.detail) == (
            HealthState.FAILING,
            "health command timed out after 0.3 s",
        )


async def test_failing_health_restarts_when_asked_to(runtime: HostRuntime) -> None:
    check = HealthCheckSpec(
        command=["false"],
        interval_s=0.05,
        failure_threshold=2,
        restart_on_failure=True,
        start_period_s=0.0,
    )
    policy = RestartPolicy(base_delay_s=0.01, max_delay_s=0.05)
    async with Supervisor(runtime, SystemClock(), random.Random(0)) as supervisor:
        await supervisor.ensure(
            ServiceSpec("zombie", SLEEPER, health=check, restart=policy, stop_grace_s=1.0)
        )
        await eventually(lambda: supervisor.status("zombie").restarts >= 1)
        status = supervisor.status("zombie")
        assert status.last_exit_code == -signal.SIGTERM
        assert status.last_exit_reason.startswith(
            "health check failed 2 times (health command exited with exit code 1)"
        )
