"""The ASGI application: wiring of settings, store, services, routes and background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from edgefleet import __version__
from edgefleet.artifacts.blobstore import BlobStore
from edgefleet.clock import Clock, SystemClock
from edgefleet.security.tuf_metadata import MAX_TARGETS_BYTES
from edgefleet.server.auth import Services
from edgefleet.server.error_handlers import install_error_handlers
from edgefleet.server.middleware import RequestContextMiddleware
from edgefleet.server.routes import (
    audit,
    blobs,
    device_api,
    devices,
    groups,
    health,
    releases,
    tokens,
    trust,
)
from edgefleet.server.services.audit import AuditService
from edgefleet.server.services.device_link import DeviceLinkService
from edgefleet.server.services.devices import DeviceService
from edgefleet.server.services.releases import ReleaseService
from edgefleet.server.services.tokens import TokenService
from edgefleet.server.services.trust import TrustService
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 60.0


def build_services(settings: ServerSettings, db: Database, clock: Clock) -> Services:
    watch = DesiredStateWatch()
    blobs = BlobStore(settings.data_dir / "blobs", max_blob_bytes=settings.max_blob_bytes)
    blobs.remove_partial_puts()
    trust = TrustService(settings.data_dir, db, clock)
    trust.reconcile_signed_releases()
    return Services(
        settings=settings,
        db=db,
        devices=DeviceService(db, clock, watch),
        tokens=TokenService(db, clock),
        device_link=DeviceLinkService(db, clock, settings),
        audit=AuditService(db),
        releases=ReleaseService(db, blobs, clock, watch),
        trust=trust,
        watch=watch,
    )


async def _housekeeping_forever(svc: Services) -> None:
    """Forget expired nonces; re-sign TUF timestamp/snapshot before they expire."""
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
        for name, job in (("nonces", svc.device_link.prune_nonces),
                          ("tuf-refresh", svc.trust.refresh_if_due)):
            try:
                await asyncio.to_thread(job)
            except Exception:
                log.exception("housekeeping failed; will retry", extra={"job": name})


def create_app(settings: ServerSettings, db: Database, clock: Clock | None = None) -> FastAPI:
    """The control-plane app over an already migrated database."""
    svc = build_services(settings, db, clock or SystemClock())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        svc.watch.bind(asyncio.get_running_loop())
        pruner = asyncio.create_task(_housekeeping_forever(svc))
        try:
            yield
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner

    app = FastAPI(
        title="edgefleet control plane",
        version=__version__,
        description="Operator API (bearer tokens with roles) and device API (signed requests).",
        lifespan=lifespan,
    )
    app.state.services = svc
    install_error_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        streamed=(("PUT", "/v1/blobs/"),),
        larger=(
            ("POST", "/v1/releases/", MAX_TARGETS_BYTES),
            ("PUT", "/v1/trust/root", MAX_TARGETS_BYTES),
            ("POST", "/v1/trust/root", MAX_TARGETS_BYTES),
        ),
    )
    for module in (health, devices, tokens, groups, audit, device_api, blobs, releases, trust):
        app.include_router(module.router)
    return app
