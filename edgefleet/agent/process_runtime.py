"""Runtime: the agent's process driver. `Runtime` is the port (the simulator provides its own);
`HostRuntime` starts real processes with asyncio.

Every process is started as the leader of a new session and process group, so stopping it
stops everything it started: `terminate` sends SIGTERM to the whole group, then SIGKILL to
the group after the grace period. `HostRuntime.close()` terminates every process it started
and is what a clean agent shutdown calls; on Linux, children also get SIGKILL from the kernel
if the agent dies without closing (PR_SET_PDEATHSIG, for the group leader only; the kernel
ties it to the thread that started the child, so run the event loop in a thread that lives
as long as the agent).

Resource limits are applied in the child before exec with setrlimit, so the command runs
under them from its first instruction:

- `memory_limit_mb` sets RLIMIT_AS: the process's virtual address space. Allocations past it
  fail (MemoryError in Python, std::bad_alloc in C++); nothing is killed by the kernel. It
  limits each process of the group separately, not their sum (that would need cgroups), and
  address space is more than resident memory: runtimes that reserve large arenas (the JVM,
  some allocators) need a limit well above their working set.
- `cpu_seconds_limit` sets RLIMIT_CPU: past it the kernel sends SIGXCPU (and SIGKILL one
  second later), so the process dies by signal. CPU time, not wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one process. `env` is laid over the agent's environment unless
    `inherit_env` is False."""

    name: str
    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    log_path: Path | None = None  # stdout and stderr are appended here; None discards them
    memory_limit_mb: int | None = None
    cpu_seconds_limit: int | None = None
    inherit_env: bool = True

    def __post_init__(self) -> None:
        # A tuple, so that two specs compare equal by value whatever sequence was passed.
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "env", dict(self.env))
        if not self.command:
            raise ValueError(f"process {self.name!r}: command is empty")
        for limit in (self.memory_limit_mb, self.cpu_seconds_limit):
            if limit is not None and limit < 1:
                raise ValueError(f"process {self.name!r}: resource limits must be >= 1")


class ProcessHandle(Protocol):
    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None:
        """None while running; the exit code, or -N when killed by signal N."""
        ...

    async def wait(self) -> int:
        """Wait for the process to exit and return its exit code."""
        ...

    async def terminate(self, grace_s: float) -> int:
        """Stop the process and its group: SIGTERM, SIGKILL after `grace_s`; the exit code.

        When the process has already exited, kills whatever is left in its group.
        """
        ...


class Runtime(Protocol):
    async def spawn(self, spec: ProcessSpec) -> ProcessHandle:
        """Start a process; OSError when it cannot be started (e.g. command not found)."""
        ...

    async def close(self) -> None:
        """Stop every process this runtime started (a clean shutdown's safety net)."""
        ...


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


# Loaded once, before any fork: the child must not import or load libraries.
_PRCTL = _load_prctl()


def _child_setup(memory_limit_mb: int | None, cpu_seconds_limit: int | None) -> Callable[[], None]:
    """The function run in the forked child before exec.

    It only makes system calls on values prepared by the parent, which is what keeps
    preexec_fn safe enough in a process that has threads.
    """
    memory_bytes = None if memory_limit_mb is None else memory_limit_mb * 1024 * 1024
    cpu_hard_s = None if cpu_seconds_limit is None else cpu_seconds_limit + 1

    def setup() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        if cpu_seconds_limit is not None and cpu_hard_s is not None:
            # Soft limit: SIGXCPU; the hard limit one second later is SIGKILL for a process
            # that handles SIGXCPU and keeps going.
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds_limit, cpu_hard_s))

    return setup


class HostProcess:
    """A process started by HostRuntime: the leader of its own process group."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self._process = process
        self.name = name

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait(self) -> int:
        return await self._process.wait()

    def _signal_group(self, signum: signal.Signals) -> None:
        # The group id is the leader's pid (start_new_session). The kernel does not reuse
        # that id while any member of the group is alive, so signalling it after the leader
        # was reaped reaches only stragglers of this group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    async def terminate(self, grace_s: float) -> int:
        if self._process.returncode is None:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), timeout=max(grace_s, 0.0))
        # Always: the leader may be gone while children it started ignore SIGTERM.
        self._signal_group(signal.SIGKILL)
        return await self._process.wait()


class HostRuntime:
    """Real processes on this machine. `close()` stops every process still running."""

    def __init__(self, *, close_grace_s: float = 5.0) -> None:
        self._close_grace_s = close_grace_s
        self._processes: set[HostProcess] = set()

    async def spawn(self, spec: ProcessSpec) -> HostProcess:
        env = {**os.environ, **spec.env} if spec.inherit_env else dict(spec.env)
        if spec.log_path is not None:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            output: int = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        else:
            output = subprocess.DEVNULL
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=spec.cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_child_setup(spec.memory_limit_mb, spec.cpu_seconds_limit),
            )
        finally:
            if output != subprocess.DEVNULL:
                os.close(output)
        handle = HostProcess(process, spec.name)
        self._processes = {p for p in self._processes if p.returncode is None}
        self._processes.add(handle)
        return handle

    def running(self) -> list[HostProcess]:
        """Processes started here that have not exited (as far as asyncio knows)."""
        return [p for p in self._processes if p.returncode is None]

    async def close(self) -> None:
        """Terminate every process this runtime started and wait for them."""
        processes, self._processes = list(self._processes), set()
        await asyncio.gather(*(p.terminate(self._close_grace_s) for p in processes))
