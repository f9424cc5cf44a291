"""The ASGI application: wiring of settings, store, services, routes and background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI

from edgefleet import __version__
from edgefleet.clock import Clock, SystemClock
from edgefleet.core.lease import LeaseName
from edgefleet.errors import SettingsError
from edgefleet.security.tuf_metadata import MAX_TARGETS_BYTES
from edgefleet.server.composition import Services, build_services
from edgefleet.server.compression import ResponseCompressionMiddleware
from edgefleet.server.error_handlers import install_error_handlers
from edgefleet.server.metrics import HttpMetricsMiddleware, ServerMetrics
from edgefleet.server.middleware import RequestContextMiddleware
from edgefleet.server.mqtt_bridge import MqttBridge
from edgefleet.server.notify import DesiredNotifications
from edgefleet.server.openapi import declare_auth
from edgefleet.server.roles import split_by_role
from edgefleet.server.routes import (
    alerts,
    attestation,
    audit,
    blobs,
    broker,
    certificates,
    dashboard,
    ddi,
    device_api,
    devices,
    governance,
    groups,
    health,
    leases,
    metrics,
    rehearsals,
    releases,
    rollouts,
    telemetry,
    tokens,
    training,
    trust,
    ui,
    workloads,
)
from edgefleet.server.services.ingest import DeviceIngest
from edgefleet.server.services.leases import LeaseKeeper
from edgefleet.server.services.otlp_export import OtlpExporter, parse_headers
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import RECHECK_INTERVAL_S
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database

log = logging.getLogger(__name__)


async def _housekeeping_forever(svc: Services) -> None:
    """Forget expired nonces; re-sign TUF timestamp/snapshot before they expire; roll up
    and prune telemetry; keep the delta cache within its size; forget state archives no
    migration took up; now and then, check KPI distributions for drift."""
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
            ("delta-cache", lambda: svc.deltas.prune(svc.settings.delta_cache_bytes)),
            ("checkpoint-archives", svc.checkpoints.forget_unused),
            ("training", svc.training.tick),
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


async def _recheck_long_polls_forever(svc: Services) -> None:
    """Wake long polls whose device's desired state another replica changed: one read of
    every waiting device's generation per interval, however many are waiting."""
    while True:
        await asyncio.sleep(RECHECK_INTERVAL_S)
        waiting = svc.watch.waiting_devices()
        if not waiting:
            continue
        try:
            generations = await asyncio.to_thread(svc.device_link.desired_generations, waiting)
        except Exception:
            log.exception("long-poll recheck failed; will retry")
            continue
        svc.watch.wake_changed(generations)


def otlp_exporter(settings: ServerSettings, metrics: ServerMetrics) -> OtlpExporter | None:
    """The exporter of stored windows to the OTLP collector, if one is configured."""
    if settings.otlp_endpoint is None:
        return None
    headers_text = settings.otlp_headers.get_secret_value() if settings.otlp_headers else ""
    try:
        headers = parse_headers(headers_text)
    except ValueError as e:
        raise SettingsError(f"bad setting otlp_headers (env EDGEFLEET_OTLP_HEADERS): {e}") from None
    return OtlpExporter(
        settings.otlp_endpoint, headers, metrics,
        queue_max_windows=settings.otlp_queue_max_windows,
        batch_max_windows=settings.otlp_batch_max_windows, timeout_s=settings.otlp_timeout_s,
    )  # fmt: skip


def lease_keeper(svc: Services, clock: Clock) -> LeaseKeeper:
    """The keeper that runs each controller loop while this replica holds its lease."""
    return LeaseKeeper(svc.db, clock, svc.settings.replica_id, svc.settings.lease_ttl_s, {
        LeaseName.HOUSEKEEPING: lambda: _housekeeping_forever(svc),
        LeaseName.ROLLOUTS: svc.rollout_controller.run_forever,
        LeaseName.WORKLOADS: svc.workload_controllers.run_forever,
    })  # fmt: skip


def create_app(
    settings: ServerSettings,
    workload_settings: WorkloadSettings,
    db: Database,
    clock: Clock | None = None,
) -> FastAPI:
    """The control-plane app over an already migrated database."""
    clock = clock or SystemClock()
    svc = build_services(settings, db, clock, workload_settings)
    roles = settings.role_names()
    keeper = lease_keeper(svc, clock) if "controllers" in roles else None
    exporter = otlp_exporter(settings, svc.metrics)
    if exporter is not None:
        svc.telemetry.on_stored(exporter.offer)
    notifications = DesiredNotifications(db, svc.watch, svc.device_link, svc.metrics)
    ingest = DeviceIngest(db, clock, svc.device_link, svc.telemetry, svc.rollout_controller.wake)
    bridge = MqttBridge(svc, clock, ingest) if settings.mqtt_url is not None else None
    if bridge is not None:
        svc.watch.on_notify(bridge.desired_changed)
        svc.devices.on_enrollment_change(bridge.enrollment_changed)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        svc.watch.bind(asyncio.get_running_loop())
        notifications.start(asyncio.get_running_loop())
        await ingest.start()
        log.info("replica starting", extra={"replica": settings.replica_id,
                                             "roles": settings.roles})  # fmt: skip
        tasks = [asyncio.create_task(_recheck_long_polls_forever(svc))]
        if keeper is not None:
            tasks.append(asyncio.create_task(keeper.run_forever()))
        if exporter is not None:
            tasks.append(asyncio.create_task(exporter.run_forever()))
        if bridge is not None:
            await bridge.start()
        try:
            yield
        finally:
            if bridge is not None:
                await bridge.stop()
            svc.watch.close()
            await ingest.stop()  # what devices sent is stored before the replica stops
            await asyncio.to_thread(notifications.stop)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            svc.deltas.close()

    app = FastAPI(
        title="edgefleet control plane",
        version=__version__,
        description="Operator API (bearer tokens with roles) and device API (signed requests).",
        lifespan=lifespan,
    )
    app.state.services = svc
    app.state.lease_keeper = keeper
    app.state.mqtt_bridge = bridge
    app.state.ingest = ingest
    install_error_handlers(app)
    app.add_middleware(ResponseCompressionMiddleware)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        # Streamed bodies are bounded by their routes, which for checkpoints read no byte
        # before the device's signed headers passed.
        streamed=(("PUT", "/v1/blobs/"), ("PUT", "/v1/checkpoints/")),
        larger=(
            ("POST", "/v1/releases/", MAX_TARGETS_BYTES),
            ("PUT", "/v1/trust/root", MAX_TARGETS_BYTES),
            ("POST", "/v1/trust/root", MAX_TARGETS_BYTES),
        ),
    )
    app.add_middleware(HttpMetricsMiddleware, metrics=svc.metrics)
    # The device routes first: every device calls them, and routes are matched in order (no
    # device route's method and path overlaps an operator route's).
    routers = [
        device_api.router,
        telemetry.device_router,
        ddi.router,
        ddi.operator_router,
        attestation.router,
        broker.router,
    ]
    routers += [module.router for module in (health, devices, tokens, groups, audit, blobs,
                                             releases, trust, telemetry, alerts, metrics,
                                             rollouts, rehearsals, governance, workloads,
                                             dashboard, ui, certificates, training)]  # fmt: skip
    routers.append(leases.router)
    # Each router is served by a role (`roles.py`); the shared ones by every replica.
    device_routers = [device_api.router, telemetry.device_router, ddi.router, broker.router]
    shared_routers = [health.router, blobs.router, metrics.router]
    for router in routers:
        declare_auth(router)
        role = ("device" if router in device_routers
                else None if router in shared_routers else "api")  # fmt: skip
        for part, gate in split_by_role(router, role, roles):
            app.include_router(part, dependencies=gate)
    return app
