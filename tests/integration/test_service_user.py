"""What the agent's children can know and touch: an allow-listed environment (never the
enrollment token), and, with the agent as root, an unprivileged user of their own that can
neither read the device key nor the agent's state. The token never shows on the running
agent's command line.

The tests that switch users need root; each creates a throwaway system user and removes it
afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import edgefleet
from edgefleet.agent.process_runtime import HostRuntime, ProcessSpec, ServiceUser
from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.releases import Trust, free_port, publish

PY = sys.executable
# A replica's signed service: Python's HTTP server over its state directory.
FILES_SERVICE = {
    "command": ["{python}", "-m", "http.server", "{port}", "--bind", "127.0.0.1",
                "--directory", "{state_dir}"],
    "port": "auto",
    "health": {"http": "/", "interval_s": 0.5},
}  # fmt: skip
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="switching to a service user needs root (run the tests as root)"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def service_user() -> Iterator[ServiceUser]:
    """A throwaway system user without a home, removed after the module."""
    if os.geteuid() != 0:
        pytest.skip("creating a service user needs root (run the tests as root)")
    name = f"efsvc-{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True)  # fmt: skip
    try:
        yield ServiceUser.named(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@dataclass(frozen=True)
class ServicePython:
    """An interpreter the service user can run, with edgefleet and its libraries importable
    (`env`): the test's own, or, where that lives in a directory closed to other users (a
    pyenv under /root), the system's CPython of the same minor version on this environment's
    packages."""

    executable: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def service_python(service_user: ServiceUser) -> ServicePython:
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    source_root = str(Path(edgefleet.__file__).resolve().parent.parent)
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [ServicePython(PY, {})] + [
        ServicePython(found, {"PYTHONPATH": os.pathsep.join([source_root, site_packages])})
        for found in (shutil.which(minor, path="/usr/local/bin:/usr/bin"),) if found
    ]  # fmt: skip
    for candidate in candidates:
        try:
            check = subprocess.run(
                [candidate.executable, "-c", "import numpy, onnxruntime, typer, edgefleet.agent"],
                user=service_user.uid, group=service_user.gid, extra_groups=[], cwd="/",
                env={**os.environ, **candidate.env}, capture_output=True, timeout=60,
            )  # fmt: skip
        except PermissionError:
            continue
        if check.returncode == 0:
            return candidate
    pytest.skip(f"no Python with edgefleet's libraries that {service_user.name} may run "
                f"({PY} lives in a directory closed to other users)")  # fmt: skip


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory a service user can reach (pytest's own temporary root is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="edgefleet-svc-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def runtime(service_user: ServiceUser) -> AsyncIterator[HostRuntime]:
    runtime = HostRuntime(service_user=service_user, close_grace_s=1.0)
    yield runtime
    await runtime.close()


def run_as(user: ServiceUser, python: ServicePython, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python.executable, "-c", code], env={**os.environ, **python.env},
                          user=user.uid, group=user.gid, extra_groups=[],
                          capture_output=True, text=True, cwd="/", timeout=30)  # fmt: skip


def can_read(user: ServiceUser, python: ServicePython, path: Path) -> bool:
    return run_as(user, python, f"open({str(path)!r}, 'rb').read()").returncode == 0


@pytest.mark.anyio
async def test_a_child_sees_only_the_allow_listed_environment_and_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {"EDGEFLEET_ENROLL_TOKEN": "efe_secret", "EDGEFLEET_ADMIN_TOKEN": "adm",
                       "HTTPS_PROXY": "http://user:pw@proxy:3128", "AWS_SECRET_ACCESS_KEY": "x",
                       "LC_ALL": "C.UTF-8", "TZ": "UTC"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    runtime = HostRuntime()
    try:
        dump = [PY, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
        spec = ProcessSpec("env", dump, env={"EDGE_X": "42", "TZ": "Europe/Berlin"},
                           log_path=tmp_path / "env.log")  # fmt: skip
        assert await (await runtime.spawn(spec)).wait() == 0
    finally:
        await runtime.close()
    seen = json.loads((tmp_path / "env.log").read_text())
    assert seen["PATH"] == os.environ["PATH"]
    assert (seen["LC_ALL"], seen["EDGE_X"], seen["TZ"]) == ("C.UTF-8", "42", "Europe/Berlin")
    for secret in ("EDGEFLEET_ENROLL_TOKEN", "EDGEFLEET_ADMIN_TOKEN", "HTTPS_PROXY",
                   "AWS_SECRET_ACCESS_KEY"):  # fmt: skip
        assert secret not in seen


@needs_root
@pytest.mark.anyio
async def test_a_child_runs_as_the_service_user_and_writes_only_its_state_directory(
    runtime: HostRuntime, service_user: ServiceUser, service_python: ServicePython,
    reachable_dir: Path,
) -> None:  # fmt: skip
    secret = reachable_dir / "device.key"
    secret.write_text("private")
    secret.chmod(0o600)
    state_dir = reachable_dir / "state" / "w1"
    (state_dir / "restored").mkdir(parents=True)  # as the agent restores a checkpoint: root's
    (state_dir / "restored" / "data").write_text("1")
    (state_dir / "escape").symlink_to(secret)  # planted by a previous run of the service
    log = reachable_dir / "out.log"
    probe = (
        "import json, os, sys\n"
        "state = os.environ['EDGEFLEET_STATE_DIR']\n"
        "open(os.path.join(state, 'restored', 'data'), 'a').write('2')\n"
        "open(os.path.join(state, 'new'), 'w').write('3')\n"
        "try:\n"
        "    open(sys.argv[1]).read(); key = 'read'\n"
        "except PermissionError:\n"
        "    key = 'refused'\n"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(),\n"
        "                  'home': os.environ['HOME'], 'key': key, 'cwd': os.getcwd()}))\n"
    )
    spec = ProcessSpec("svc", [service_python.executable, "-c", probe, str(secret)],
                       env={**service_python.env, "EDGEFLEET_STATE_DIR": str(state_dir)},
                       log_path=log)  # fmt: skip
    assert await (await runtime.spawn(spec)).wait() == 0, log.read_text()
    seen = json.loads(log.read_text().splitlines()[-1])
    user = service_user
    assert (seen["uid"], seen["gid"], seen["groups"]) == (user.uid, user.gid, [])
    assert (seen["home"], seen["key"], seen["cwd"]) == (user.home, "refused", "/")
    assert (state_dir / "restored" / "data").read_text() == "12"
    assert (state_dir / "new").stat().st_uid == user.uid
    # The planted link was handed over itself, never what it points at.
    assert secret.stat().st_uid == 0 and secret.stat().st_mode & 0o777 == 0o600
    assert (state_dir / "escape").lstat().st_uid == user.uid


# -- the whole agent ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trust(server: ServerProcess) -> Trust:
    with server.client() as client:
        return Trust.install(client)


def processes_of(needle: str) -> list[int]:
    """Pids whose command line contains `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def uids_of(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(uid) for uid in line.split()[1:]}
    raise AssertionError(f"no Uid line for {pid}")


@needs_root
def test_the_release_service_and_a_replica_run_as_the_service_user_without_secrets(
    server: ServerProcess, admin: FleetClient, trust: Trust, service_user: ServiceUser,
    service_python: ServicePython, reachable_dir: Path,
) -> None:  # fmt: skip
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    data_dir = reachable_dir / "agent"
    agent = AgentProcess(
        server.url, data_dir, None, f"svc-{free_port()}",
        # On the command line on purpose: the agent must move it off there.
        extra_args=["--enroll-token", token, "--service-user", service_user.name,
                    "--statsd-port", "0"],
        env={**service_python.env, "EDGEFLEET_ADMIN_TOKEN": "planted-admin-secret",
             "HTTPS_PROXY": "http://user:proxy-secret@127.0.0.1:9"},
    )  # fmt: skip
    agent.args[0] = service_python.executable  # the release service runs the agent's Python
    agent.start()
    try:
        wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
        port = free_port()
        publish(admin, reachable_dir / "release", "guarded", "1.0.0",
                build_mlp(4, 8, 3, seed=1), port, trust.targets_keys)  # fmt: skip
        admin.assign_release("guarded", "1.0.0", device=agent.device_id)
        wait_for(
            lambda: (
                admin.get_device(agent.device_id or "")["release_status"].get("state")
                == "installed"
            ),
            timeout_s=90,
            what="release installed",
        )
        answer = httpx.post(f"http://127.0.0.1:{port}/infer", json={"input": [[0.1] * 4]},
                            timeout=10)  # fmt: skip
        assert answer.status_code == 200, answer.text

        assert agent.proc is not None
        assert token.encode() not in Path(f"/proc/{agent.proc.pid}/cmdline").read_bytes()
        services = processes_of(f"{data_dir}/release/slots/")
        services = [p for p in services if b"inference_server" in
                    Path(f"/proc/{p}/cmdline").read_bytes()]  # fmt: skip
        assert len(services) == 1, services
        service = services[0]
        assert uids_of(service) == {service_user.uid}
        environ = environ_of(service)
        assert "PATH" in environ and environ["EDGEFLEET_STATSD"].startswith("127.0.0.1:")
        assert environ["HOME"] == service_user.home
        leaked = [k for k, v in environ.items()
                  if k in ("EDGEFLEET_ENROLL_TOKEN", "EDGEFLEET_ADMIN_TOKEN", "HTTPS_PROXY")
                  or token in v or "secret" in v]  # fmt: skip
        assert not leaked, leaked

        # The service user reaches the release files, never the agent's key or state.
        model = next((data_dir / "release" / "current").resolve().glob("*.onnx"))
        assert can_read(service_user, service_python, model)
        assert not can_read(service_user, service_python, data_dir / "device.key")
        assert not can_read(service_user, service_python, data_dir / "agent-state.json")
        listing = run_as(service_user, service_python, f"import os; os.listdir({str(data_dir)!r})")
        assert "PermissionError" in listing.stderr
        assert data_dir.stat().st_mode & 0o777 == 0o711

        # A workload replica: the same user, and its state directory is its own.
        publish(admin, reachable_dir / "release", "files", "1.0.0", build_mlp(4, 8, 3, seed=2),
                free_port(), trust.targets_keys, manifest=FILES_SERVICE)  # fmt: skip
        admin.apply_workload({"kind": "Workload", "metadata": {"name": "files"}, "spec": {
            "artifacts": ["files@1.0.0"], "resources": {"cpu_millicores": 100, "memory_mb": 256},
            "service": {"port": "auto"}, "state_dir": "/var/lib/files"}})  # fmt: skip
        state_dir = data_dir / "workloads" / "state" / "files"
        replica = wait_for(lambda: processes_of(f"--directory\0{state_dir}"), timeout_s=90,
                           what="the workload replica to start")[0]  # fmt: skip
        assert uids_of(replica) == {service_user.uid}
        assert state_dir.stat().st_uid == service_user.uid
        assert not [k for k in environ_of(replica) if k in ("EDGEFLEET_ENROLL_TOKEN",
                    "EDGEFLEET_ADMIN_TOKEN", "HTTPS_PROXY")]  # fmt: skip
        note = f"open({str(state_dir / 'note')!r}, 'w').write('x')"
        assert run_as(service_user, service_python, note).returncode == 0
    finally:
        agent.stop()


def test_the_agent_started_directly_moves_the_token_off_its_command_line(tmp_path: Path) -> None:
    token = f"efe_{uuid.uuid4().hex}"
    log = tmp_path / "agent.log"
    with log.open("wb") as output:
        agent = subprocess.Popen(
            [PY, "-m", "edgefleet.agent", "--server", "http://127.0.0.1:9", "--data-dir",
             str(tmp_path / "data"), "--statsd-port", "0", "--enroll-token", token],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        # It tries to enroll (with the token) against a server that is not there.
        wait_for(lambda: "retry_in_s=" in log.read_text(), what="the agent to try to enroll")
        assert token.encode() not in Path(f"/proc/{agent.pid}/cmdline").read_bytes()
        assert b"edgefleet.agent" in Path(f"/proc/{agent.pid}/cmdline").read_bytes()
    finally:
        agent.terminate()
        agent.wait(timeout=30)
