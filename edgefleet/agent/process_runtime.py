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

What a child may know and touch:

- Its environment is what its spec sets, laid over a short allow-list of the agent's own
  variables (`inherited_environment`: PATH, locale, time zone, TMPDIR, Python's search
  path and output settings, the library search path, the TLS trust store). Nothing else
  passes: not the agent's EDGEFLEET_* variables (the enrollment token), not proxy
  variables (they may carry credentials; a service that needs a proxy sets one in its own
  spec).
- With a `ServiceUser` (the agent runs as root), every process runs as that user:
  setgroups([]), setgid and setuid in the child before exec. It reads what is readable by
  others (release files are written 0644; the device key and the agent's state are 0600)
  and writes only its state directory, the one named by EDGEFLEET_STATE_DIR in its
  environment, which the runtime hands over to the user before every start. Its output
  file is opened by the agent, so logs need no permission of the user's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import resource
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edgefleet.errors import SettingsError
from edgefleet.parent_death import death_signal_setter

# The agent's variables a child takes (plus every LC_*): what programs need to run.
INHERITED_ENV = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR",
    "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
    "PYTHONIOENCODING", "PYTHONUTF8", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR",
})  # fmt: skip
# The state directory a service is handed: the one place a service user may write.
STATE_DIR_ENV = "EDGEFLEET_STATE_DIR"
# Services run as this user when the agent runs as root and names none (if it exists).
DEFAULT_SERVICE_USER = "edgefleet-svc"


def inherited_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of `environ` a child process may see.

    >>> inherited_environment({"PATH": "/bin", "LC_ALL": "C", "EDGEFLEET_ENROLL_TOKEN": "efe_x",
    ...                        "HTTPS_PROXY": "http://user:pw@proxy:3128"})
    {'PATH': '/bin', 'LC_ALL': 'C'}
    """
    return {k: v for k, v in environ.items() if k in INHERITED_ENV or k.startswith("LC_")}


@dataclass(frozen=True)
class ServiceUser:
    """The unprivileged user services run as."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def named(cls, name: str) -> ServiceUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise SettingsError(
                f"bad setting service_user (--service-user / EDGEFLEET_SERVICE_USER): "
                f"no user {name!r} on this machine"
            ) from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def environment(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def resolve_service_user(name: str | None, euid: int) -> ServiceUser | None:
    """Who services run as; None: as the agent's own user.

    A named user must exist, and the agent can become another user only as root. An agent
    running as root without a name uses DEFAULT_SERVICE_USER when that user exists (the
    caller warns when it does not: services then run as root).
    """
    if name is None:
        if euid != 0:
            return None
        try:
            return ServiceUser.named(DEFAULT_SERVICE_USER)
        except SettingsError:
            return None
    user = ServiceUser.named(name)
    if user.uid != euid and euid != 0:
        raise SettingsError(
            f"bad setting service_user (--service-user / EDGEFLEET_SERVICE_USER): running "
            f"services as {name!r} needs the agent to run as root"
        )
    return None if user.uid == euid else user


def open_data_dir_to(user: ServiceUser, data_dir: Path) -> None:
    """Let `user` reach the release files and state directories in `data_dir`, not list it.

    The directory becomes 0711; every directory above it must already let the user pass
    (SettingsError naming the one that does not)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o711)
    for directory in data_dir.resolve().parents:
        info = directory.stat()
        if info.st_uid == user.uid:
            passable = info.st_mode & 0o100
        elif info.st_gid == user.gid:
            passable = info.st_mode & 0o010
        else:
            passable = info.st_mode & 0o001
        if not passable:
            raise SettingsError(
                f"bad setting data_dir (--data-dir / EDGEFLEET_DATA_DIR): the service user "
                f"{user.name} cannot reach {data_dir}: {directory} does not let it pass "
                f"(chmod o+x {directory}, or choose another data dir)"
            )


def _hand_over(directory: Path, user: ServiceUser) -> None:
    """Make `directory` and everything in it owned by `user`.

    fwalk with follow_symlinks=False and chown relative to each directory's descriptor: a
    link the service planted in its state directory is chowned itself, never its target.
    """
    if directory.is_symlink() or not directory.is_dir():
        return
    os.chown(directory, user.uid, user.gid, follow_symlinks=False)
    for _, directories, files, dir_fd in os.fwalk(directory, follow_symlinks=False):
        for name in directories + files:
            os.chown(name, user.uid, user.gid, dir_fd=dir_fd, follow_symlinks=False)


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one process. `env` is laid over `inherited_environment()` of the
    agent's."""

    name: str
    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    log_path: Path | None = None  # stdout and stderr are appended here; None discards them
    memory_limit_mb: int | None = None
    cpu_seconds_limit: int | None = None

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


# Loaded once, before any fork: the child must not import or load libraries.
_ARM_DEATH_SIGNAL = death_signal_setter()


def _child_setup(memory_limit_mb: int | None, cpu_seconds_limit: int | None) -> Callable[[], None]:
    """The function run in the forked child before exec.

    It only makes system calls on values prepared by the parent, which is what keeps
    preexec_fn safe enough in a process that has threads.
    """
    memory_bytes = None if memory_limit_mb is None else memory_limit_mb * 1024 * 1024
    cpu_hard_s = None if cpu_seconds_limit is None else cpu_seconds_limit + 1

    def setup() -> None:
        if _ARM_DEATH_SIGNAL is not None:
            _ARM_DEATH_SIGNAL()
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
    """Real processes on this machine, as `service_user` when given. `close()` stops every
    process still running."""

    def __init__(
        self, *, service_user: ServiceUser | None = None, close_grace_s: float = 5.0
    ) -> None:
        self._user = service_user
        self._close_grace_s = close_grace_s
        self._processes: set[HostProcess] = set()

    async def spawn(self, spec: ProcessSpec) -> HostProcess:
        env = inherited_environment(os.environ)
        user = self._user
        if user is not None:
            env.update(user.environment())
            state_dir = spec.env.get(STATE_DIR_ENV)
            if state_dir:
                _hand_over(Path(state_dir), user)
        env.update(spec.env)
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
                # The agent's own working directory may be closed to a service user.
                cwd=spec.cwd if spec.cwd is not None or user is None else "/",
                env=env,
                start_new_session=True,
                # subprocess switches user before preexec_fn runs, so the parent-death
                # signal it sets survives (a change of credentials clears it).
                user=None if user is None else user.uid,
                group=None if user is None else user.gid,
                extra_groups=None if user is None else [],
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
