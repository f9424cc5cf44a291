"""PostgreSQL for tests: a throwaway schema on the local server, or a clear skip reason;
a private server of a test's own (`PrivateCluster`) for tests that stop or restart it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

POSTGRES_URL = os.environ.get(
    "EDGEFLEET_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def postgres_unavailable() -> str | None:
    """None when PostgreSQL answers, else why not (the reason tests print when skipping)."""
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except (OperationalError, ImportError) as e:
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(e).__name__}"
    return None


@contextmanager
def throwaway_schema() -> Iterator[str]:
    """A fresh schema; yields a database URL whose search_path points at it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A fresh, empty database on the local server (for tests whose processes take
    database-wide locks or want an empty one); yields its URL, drops it afterwards."""
    name = f"edgefleet_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def postgres_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl (on PATH or Debian's versioned one), if any."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)  # fmt: skip
    return versions[-1].parent if versions else None


class PrivateCluster:
    """A PostgreSQL server of one test's own (initdb, pg_ctl) on 127.0.0.1:`port`.

    As root it runs as the `postgres` user, which must own its directory: a fresh one under
    the system's temp dir, removed by `destroy()`."""

    def __init__(self, binaries: Path, port: int) -> None:
        self.binaries = binaries
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="edgefleet-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.sockets.mkdir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.binaries / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
                               f"{self.log()}")  # fmt: skip

    def log(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _pg_ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.root / "postgres.log"),
                  "-o", options, "-w", "-t", "60", *args)  # fmt: skip

    def create(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust")
        self._pg_ctl("start")

    def restart(self) -> None:
        """A real restart: a fast shutdown (clients disconnected), then a fresh start."""
        self._pg_ctl("restart", "-m", "fast")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_cluster(port: int) -> Iterator[PrivateCluster]:
    """A running private PostgreSQL server, stopped and removed afterwards (skip first
    where `postgres_binaries()` is None)."""
    binaries = postgres_binaries()
    if binaries is None:
        raise RuntimeError("initdb not found")
    cluster = PrivateCluster(binaries, port)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.destroy()
