"""The ASGI application: wiring of settings, store, services, routes and background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from edgefleet import __version__
from edgefleet.clock import Clock, SystemClock
from edgefleet.server.auth import Services
from edgefleet.server.error_handlers import install_error_handlers
from edgefleet.server.middleware import RequestContextMiddleware
from edgefleet.server.routes import audit, device_api, devices, groups, health, tokens
from edgefleet.server.services.audit import AuditService
from edgefleet.server.services.device_link import DeviceLinkService
from edgefleet.server.services.devices import DeviceService
from edgefleet.server.services.tokens import TokenService
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database

log = logging.getLogger(__name__)

NONCE_PRUNE_INTERVAL_S = 60.0


def build_services(settings: ServerSettings, db: Database, clock: Clock) -> Services:
    watch = DesiredStateWatch()
    return Services(
        settings=settings,
        db=db,
        devices=DeviceService(db, clock, watch),
        tokens=TokenService(db, clock),
        device_link=DeviceLinkService(db, clock, settings),
        audit=AuditService(db),
        watch=watch,
    )


async def _prune_nonces_forever(svc: Services) -> None:
    while True:
        await asyncio.sleep(NONCE_PRUNE_INTERVAL_S)
        try:
            pruned = await asyncio.to_thread(svc.device_link.prune_nonces)
            log.debug("pruned nonces", extra={"count": pruned})
        except Exception:
            log.exception("nonce pruning failed; will retry")


def create_app(settings: ServerSettings, db: Database, clock: Clock | None = None) -> FastAPI:
    """The control-plane app over an already migrated database."""
    svc = build_services(settings, db, clock or SystemClock())

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        svc.watch.bind(asyncio.get_running_loop())
        pruner = asyncio.create_task(_prune_nonces_forever(svc))
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
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    for module in (health, devices, tokens, groups, audit, device_api):
        app.include_router(module.router)
    return app
