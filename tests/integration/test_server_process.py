"""The server process: its data dir is its owner's alone, and nothing it starts outlives
it, whether it is stopped or killed."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import psutil
import pytest

from edgefleet.artifacts.model_builder import build_mlp, save_model
from edgefleet.cli.releases import push_file
from edgefleet.core.updates.release import ArtifactKind
from edgefleet.localfleet import ServerProcess, wait_for
from tests.conftest import ADMIN_TOKEN
from tests.releases import fine_tuned


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_and_the_database_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, ADMIN_TOKEN)
    database = [server.db_path, data / "edgefleet.db-wal", data / "edgefleet.db-shm"]
    os.chmod(data, 0o755)  # as a umask of 022 makes it
    server.start()
    try:
        assert _mode(data) == 0o700
        assert {f.name: _mode(f) for f in database} == {f.name: 0o600 for f in database}
    finally:
        server.stop()

    # A data dir left readable by an earlier version is tightened at start.
    for path in (data, *database):
        if path.exists():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    server.start()
    try:
        assert _mode(data) == 0o700
        assert {f.name: _mode(f) for f in database} == {f.name: 0o600 for f in database}
    finally:
        server.stop()


def _alive(process: psutil.Process) -> bool:
    """Still running (a zombie has exited; its parent only has not reaped it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_delta_worker_outlives_the_server(tmp_path: Path, signum: int) -> None:
    server = ServerProcess(tmp_path / "data", ADMIN_TOKEN)
    server.start()
    try:
        base = build_mlp(256, 1024, 64, seed=3)
        with server.client() as admin:
            for version, model in (("1.0.0", base), ("2.0.0", fine_tuned(base, 1e-3, 1))):
                path = save_model(model, tmp_path / f"model-{version}.onnx")
                push_file(admin, path, "model", version, ArtifactKind.ONNX_MODEL, [])
            admin.delta_stats("model", compute=True)
        assert server.proc is not None
        leader = psutil.Process(server.proc.pid)
        started = wait_for(lambda: leader.children(recursive=True), interval_s=0.02,
                           what="the server to start computing the delta")  # fmt: skip
        os.kill(leader.pid, signum)
        server.proc.wait(timeout=15)
        wait_for(lambda: not any(_alive(p) for p in started), timeout_s=5,
                 what=f"the server's children {[p.pid for p in started]} to exit")  # fmt: skip
    finally:
        server.stop()
