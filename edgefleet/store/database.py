"""The database handle: engine setup, migrations, and transactions that bundle repositories.

SQLite (the embedded default) runs in WAL mode with `synchronous=NORMAL`: a commit is
atomic and survives a crash of the process; a power cut may lose the last few commits
(heartbeats, nonces), never corrupt the database. Write transactions start with `BEGIN
IMMEDIATE` so two writers queue instead of failing on a lock upgrade. Within one process
they queue on a lock of ours first: SQLite's own busy handler polls with sleeps of up to
100 ms, so writers left to contend for its lock wait far longer than the work takes (only
another process, such as a CLI or a second replica, still meets the busy timeout). Readers
never wait on writers. PostgreSQL uses the same code through psycopg, without the lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from edgefleet.core.lease import Fence
from edgefleet.errors import EdgefleetError, LeaseLost, SettingsError, StoreError
from edgefleet.store.repositories.alerts import AlertRepository
from edgefleet.store.repositories.api_tokens import ApiTokenRepository
from edgefleet.store.repositories.attestations import AttestationRepository
from edgefleet.store.repositories.audit import AuditRepository
from edgefleet.store.repositories.checkpoints import CheckpointArchiveRepository
from edgefleet.store.repositories.ddi import DdiRepository
from edgefleet.store.repositories.devices import DeviceRepository
from edgefleet.store.repositories.enrollment_tokens import EnrollmentTokenRepository
from edgefleet.store.repositories.groups import GroupRepository
from edgefleet.store.repositories.leases import LeaseRepository
from edgefleet.store.repositories.migrations import MigrationRepository
from edgefleet.store.repositories.node_health import NodeHealthRepository
from edgefleet.store.repositories.nonces import NonceRepository
from edgefleet.store.repositories.placement_moves import PlacementMoveRepository
from edgefleet.store.repositories.policies import PendingChangeRepository, PolicyRepository
from edgefleet.store.repositories.rehearsals import RehearsalRepository
from edgefleet.store.repositories.releases import ArtifactRepository, ReleaseRepository
from edgefleet.store.repositories.roles import RoleRepository
from edgefleet.store.repositories.rollouts import ReleaseTrainRepository, RolloutRepository
from edgefleet.store.repositories.telemetry import TelemetryRepository
from edgefleet.store.repositories.training import TrainingRepository
from edgefleet.store.repositories.workloads import PlacementRepository, WorkloadRepository

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_POOL_SIZE = 24
# PostgreSQL advisory locks: around a migration, and around a replica's whole start-up.
MIGRATION_LOCK_KEY = 0x6564676566  # "edgef"
STARTUP_LOCK_KEY = MIGRATION_LOCK_KEY + 1
# The lease a controller acts under (`server/services/leases.py` sets it in the controller's
# task; `asyncio.to_thread` carries it into the worker thread): every write transaction
# started there checks, just before it commits, that the lease still has this fence.
ACTING_UNDER: ContextVar[Fence | None] = ContextVar("edgefleet_acting_under", default=None)


class Transaction:
    """One database transaction and the repositories bound to it."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.devices = DeviceRepository(connection)
        self.api_tokens = ApiTokenRepository(connection)
        self.enrollment_tokens = EnrollmentTokenRepository(connection)
        self.groups = GroupRepository(connection)
        self.audit = AuditRepository(connection)
        self.nonces = NonceRepository(connection)
        self.artifacts = ArtifactRepository(connection)
        self.releases = ReleaseRepository(connection)
        self.telemetry = TelemetryRepository(connection)
        self.alerts = AlertRepository(connection)
        self.workloads = WorkloadRepository(connection)
        self.placement = PlacementRepository(connection)
        self.placement_moves = PlacementMoveRepository(connection)
        self.node_health = NodeHealthRepository(connection)
        self.migrations = MigrationRepository(connection)
        self.checkpoint_archives = CheckpointArchiveRepository(connection)
        self.rollouts = RolloutRepository(connection)
        self.release_trains = ReleaseTrainRepository(connection)
        self.rehearsals = RehearsalRepository(connection)
        self.training = TrainingRepository(connection)
        self.ddi = DdiRepository(connection)
        self.attestations = AttestationRepository(connection)
        self.policies = PolicyRepository(connection)
        self.pending_changes = PendingChangeRepository(connection)
        self.roles = RoleRepository(connection)
        self.leases = LeaseRepository(connection)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        # One writer at a time in this process (see the module docstring); re-entrant so
        # that a nested transaction fails on SQLite's busy timeout as before, not here.
        self._writers: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._refusals_lock = threading.Lock()
        self.fenced_writes_refused = 0  # writes of a controller that had lost its lease
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            # Enough connections for the request threads and the controllers: a connection
            # past the pool size is closed on return, and reopening one costs its pragmas.
            if _is_sqlite_file(url):
                kwargs["pool_size"] = SQLITE_POOL_SIZE
                kwargs["max_overflow"] = SQLITE_POOL_SIZE
            self._writers = threading.RLock()
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (ImportError, ValueError) as e:
            raise SettingsError(f"database_url {url!r} is not usable: {e}") from e
        if self.engine.dialect.name == "sqlite":
            if _is_sqlite_file(url) and self.engine.url.database:
                try:
                    restrict_sqlite_files(Path(self.engine.url.database))
                except OSError as e:
                    raise SettingsError(f"database_url {url!r} is not usable: {e}") from e
            _configure_sqlite(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Apply every pending migration (idempotent). On PostgreSQL, replicas that start
        together queue on an advisory lock: the first migrates, the others then find the
        schema at head and go on."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        try:
            with self.engine.begin() as connection:
                if self.dialect == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                       {"key": MIGRATION_LOCK_KEY})  # fmt: skip
                before = MigrationContext.configure(connection).get_current_revision()
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                after = MigrationContext.configure(connection).get_current_revision()
        except OperationalError as e:
            raise StoreError(f"cannot migrate database: {e.orig}") from e
        if before != after:
            log.info("migrated the database schema", extra={"from": before, "to": after})

    @contextmanager
    def one_at_a_time(self) -> Iterator[None]:
        """On PostgreSQL, one process at a time through the block (a session advisory lock,
        which a process that dies gives back with its connection): replicas starting
        together set up the schema and the data dir in turn. On SQLite, no lock."""
        if self.dialect != "postgresql":
            yield
            return
        with self._translated(), self.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"),
                                   {"key": STARTUP_LOCK_KEY})  # fmt: skip
                connection.commit()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction: commits when the block ends, rolls back on any error."""
        # The lock is taken before a connection, so a queued writer holds none of the pool.
        with (
            self._translated(),
            self._writers,
            self.engine.connect() as connection,
            connection.begin(),
        ):
            tx = Transaction(connection)
            yield tx
            fence = ACTING_UNDER.get()
            if fence is not None:
                self._check_fence(tx, fence)

    def _check_fence(self, tx: Transaction, fence: Fence) -> None:
        try:
            tx.leases.check_fence(fence)
        except LeaseLost:
            with self._refusals_lock:
                self.fenced_writes_refused += 1
            log.warning("fenced write refused: the lease was taken over",
                        extra={"lease": fence.name, "token": fence.token})  # fmt: skip
            raise

    @contextmanager
    def rehearsal(self) -> Iterator[Transaction]:
        """A write transaction that is always rolled back: what the writes would do, for a
        dry run, leaving no trace (the audit chain included)."""
        with self._translated(), self._writers, self.engine.connect() as connection:
            outer = connection.begin()
            try:
                yield Transaction(connection)
            finally:
                outer.rollback()

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A read-only transaction (SQLite: deferred, so readers never wait on writers)."""
        with self._translated(), self.engine.connect() as connection:
            connection = connection.execution_options(sqlite_begin="DEFERRED")
            with connection.begin():
                yield Transaction(connection)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except EdgefleetError:
            raise
        except DBAPIError as e:
            log.warning("database error", extra={"error": str(e.orig)})
            raise StoreError(f"database error: {e.orig}") from e

    def ping(self) -> None:
        """Raise StoreError unless the database answers a trivial query."""
        with self._translated(), self.engine.connect() as connection:
            connection.execution_options(sqlite_begin="DEFERRED").exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()


def _is_sqlite_file(url: str) -> bool:
    """A SQLite database in a file (an in-memory one has a single-connection pool)."""
    path = url.partition("://")[2].lstrip("/").partition("?")[0]
    return bool(path) and path != ":memory:" and "mode=memory" not in url


def restrict_sqlite_files(path: Path) -> None:
    """Make the database file and its -wal and -shm files readable by their owner only.

    The file is created (empty, mode 0600) when it does not exist, so SQLite never creates
    it with the umask's mode; SQLite gives the -wal and -shm files it creates the database
    file's mode. Files left readable by an earlier version are tightened.
    """
    if str(path).startswith("file:"):  # a URI filename: SQLite opens it as it says
        return
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(file, 0o600)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so we can choose BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")
