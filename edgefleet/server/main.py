"""`edgefleet server`: prepare the data dir, migrate, bootstrap, serve with uvicorn."""

from __future__ import annotations

import gc
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

from edgefleet.atomicfile import write_atomically
from edgefleet.clock import SystemClock
from edgefleet.errors import SettingsError
from edgefleet.logfmt import configure
from edgefleet.server.app import create_app
from edgefleet.server.services.admin_access import AdminAccess, AdminTokenCheck, AdminTokenState
from edgefleet.server.settings import ServerSettings
from edgefleet.server.tls import uvicorn_tls_options
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database

log = logging.getLogger(__name__)

URL_FILE = "server.url"
# The cyclic collector's thresholds for the server (CPython's default is (700, 10, 10)). A
# full collection walks every tracked object and stops the whole process meanwhile; the
# server holds hundreds of thousands of them (each waiting long poll is ~150: the ASGI
# middleware coroutines, closures, the request), so at 1500 devices a full collection took
# ~0.4 s every 10-20 s and stalled every request in flight, to free a few hundred objects
# each time (cycles are rare here; reference counting frees the rest). A full collection is
# now considered after 1000 young ones instead of 10; young collections stay as frequent.
GC_THRESHOLDS = (700, 10, 1000)


class _Server(uvicorn.Server):
    """uvicorn, answering waiting long polls as soon as shutdown begins: uvicorn waits for
    running requests before the app's lifespan ends, and a long poll would otherwise hold
    SIGTERM up for the whole graceful-shutdown timeout."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn to listen on (port 0 picks a free one).

    Created as IPPROTO_TCP, not the default protocol 0: accepted sockets inherit the number,
    and asyncio sets TCP_NODELAY only on sockets that say they are TCP. Without it a response
    written in two segments (head, then body) waited for the client's delayed ACK: ~40 ms on
    every request of a kept-alive connection after its first.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:  # in use, not an address of this machine, a privileged port
        sock.close()
        reason = e.strerror or str(e)
        raise SettingsError(f"cannot listen on {host}:{port} (--host/--port or "
                            f"EDGEFLEET_HOST/EDGEFLEET_PORT): {reason}",
                            code="cannot_listen") from e  # fmt: skip
    return sock


def prepare_data_dir(data_dir: Path) -> None:
    """Create the data dir, owner only: it holds the database (token hashes), the server's
    TUF signing keys and the blobs. A data dir made by an earlier version is tightened."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        data_dir.chmod(0o700)
    except OSError as e:
        raise SettingsError(f"data dir {data_dir} is not usable (--data-dir or "
                            f"EDGEFLEET_DATA_DIR): {e.strerror or e}") from e  # fmt: skip


def log_admin_token_check(check: AdminTokenCheck, settings: ServerSettings) -> None:
    """One line for what EDGEFLEET_ADMIN_TOKEN did at this start, a warning when nobody can
    administer the control plane or the variable was ignored."""
    recover = f"edgefleet server bootstrap-token --data-dir {settings.data_dir}"
    if settings.database_url:
        recover += " --database-url URL"
    if check.state is AdminTokenState.CREATED:
        log.info("created the admin token EDGEFLEET_ADMIN_TOKEN names",
                 extra={"token_id": check.token_id})  # fmt: skip
    elif check.state is AdminTokenState.IN_USE:
        log.info("EDGEFLEET_ADMIN_TOKEN is an admin token of this data dir",
                 extra={"token_id": check.token_id})  # fmt: skip
    elif check.state is AdminTokenState.IGNORED:
        log.warning(
            "EDGEFLEET_ADMIN_TOKEN is ignored: it counts only while the data dir has no API token",
            extra={"reason": check.reason, "recover": recover},
        )
    elif check.state is AdminTokenState.NO_ADMIN:
        log.warning(
            "nobody can administer this control plane: set EDGEFLEET_ADMIN_TOKEN "
            "before the first start, or mint an admin token on this machine",
            extra={"reason": check.reason, "recover": recover},
        )


def serve(settings: ServerSettings, workload_settings: WorkloadSettings) -> None:
    """Run the control plane until SIGINT/SIGTERM. Writes the bound URL to DATA_DIR/server.url
    (useful with --port 0)."""
    configure(settings.log_level)
    prepare_data_dir(settings.data_dir)
    sock = listening_socket(settings.host, settings.port)  # first: a port in use fails fast
    db = Database(settings.resolved_database_url())
    # Replicas that start together on one database and data dir set up one at a time: the
    # schema, the server's TUF keys, the first admin token.
    with db.one_at_a_time():
        db.migrate()
        app = create_app(settings, workload_settings, db)
        admin = AdminAccess(db, app.state.services.tokens, SystemClock()).check_at_start(
            settings.admin_token.get_secret_value() if settings.admin_token is not None else None
        )
    tls = uvicorn_tls_options(settings)  # after the app made the device CA --client-ca names
    # What startup built lives as long as the process: out of every later collection's walk.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    log_admin_token_check(admin, settings)
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    url = f"{scheme}://{host}:{port}" if ":" not in host else f"{scheme}://[{host}]:{port}"
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=settings.keep_alive_s,
        lifespan="on",
        **tls,
    )
    server = _Server(config, app.state.services.watch.close)
    write_atomically(settings.data_dir / URL_FILE, (url + "\n").encode())
    log.info(
        "control plane listening",
        extra={"url": url, "data_dir": str(settings.data_dir), "replica": settings.replica_id},
    )
    try:
        server.run(sockets=[sock])
    finally:
        (settings.data_dir / URL_FILE).unlink(missing_ok=True)
        db.dispose()
