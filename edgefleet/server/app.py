"""The ASGI application: wiring of settings, store, services, routes and background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from edgefleet import __version__
from edgefleet.artifacts.blobstore import BlobStore
from edgefleet.clock import Clock, SystemClock
from edgefleet.security.tuf_metadata import MAX_TARGETS_BYTES
from edgefleet.server.auth import Services
from edgefleet.server.error_handlers import install_error_handlers
from edgefleet.server.metrics import HttpMetricsMiddleware, ServerMetrics
from edgefleet.server.middleware import RequestContextMiddleware
from edgefleet.server.routes import (
    alerts,
    audit,
    blobs,
    device_api,
    devices,
    groups,
    health,
    metrics,
    releases,
    telemetry,
    tokens,
    trust,
)
from edgefleet.server.services.alerts import AlertService
from edgefleet.server.services.audit import AuditService
from edgefleet.server.services.deltas import DeltaService
from edgefleet.server.services.device_link import DeviceLinkService
from edgefleet.server.services.devices import DeviceService
from edgefleet.server.services.fleet_metrics import FleetMetricsService
from edgefleet.server.services.releases import ReleaseService
from edgefleet.server.services.telemetry import TelemetryService
from edgefleet.server.services.tokens import TokenService
from edgefleet.server.services.trust import TrustService
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database

log = logging.getLogger(__name__)



def build_services(settings: ServerSettings, db: Database, clock: Clock) -> Services:
    watch = DesiredStateWatch()
    blobs = BlobStore(settings.data_dir / "blobs", max_blob_bytes=settings.max_blob_bytes)
    blobs.remove_partial_puts()
    trust = TrustService(settings.data_dir, db, clock)
    trust.reconcile_signed_releases()
    server_metrics = ServerMetrics()
    deltas = DeltaService(blobs, settings.data_dir / "deltas")
    return Services(
        settings=settings,
        db=db,
        devices=DeviceService(db, clock, watch),
        tokens=TokenService(db, clock),
        device_link=DeviceLinkService(db, clock, settings),
        audit=AuditService(db),
        releases=ReleaseService(db, blobs, clock, watch, deltas),
        deltas=deltas,
        trust=trust,
        watch=watch,
        metrics=server_metrics,
        telemetry=TelemetryService(db, clock, watch, server_metrics, settings),
        alerts=AlertService(db, clock, watch, server_metrics),
        fleet_metrics=FleetMetricsService(db, clock, server_metrics),
    )


async def _housekeeping_forever(svc: Services) -> None:
    """Forget expired nonces; re-sign TUF timestamp/snapshot before they expire; roll up
    and prune telemetry; now and then, check KPI distributions for drift."""
    interval_s = svc.settings.housekeeping_interval_s
    analysis_every = max(1, round(svc.settings.telemetry_analysis_interval_s / interval_s))
    runs = 0
    while True:
        await asyncio.sleep(interval_s)
        runs += 1
        jobs: list[tuple[str, Callable[[], object]]] = [
            ("nonces", svc.device_link.prune_nonces),
            ("tuf-refresh", svc.trust.refresh_if_due),
            ("telemetry-retention", svc.telemetry.roll_up_and_prune),
        ]
        if runs % analysis_every == 0:
            jobs.append(("telemetry-analysis", svc.alerts.analyze))
        for name, job in jobs:
            try:
                await asyncio.to_thread(job)
            except Exception:
                svc.metrics.housekeeping_runs.inc(name, "error")
                log.exception("housekeeping failed; will retry", extra={"job": name})
            else:
                svc.metrics.housekeeping_runs.inc(name, "ok")


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
            svc.deltas.close()

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
    app.add_middleware(HttpMetricsMiddleware, metrics=svc.metrics)
    for module in (health, devices, tokens, groups, audit, device_api, blobs, releases, trust,
                   telemetry, alerts, metrics):
        app.include_router(module.router)
    app.include_router(telemetry.device_router)
    return app
