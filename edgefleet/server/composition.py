"""The composition root: the services of one control-plane replica, built once from the
process's settings (`ServerSettings` and `WorkloadSettings`, both loaded by the entrypoint,
`server/main.py`) and handed to the routes (`auth.services`) and the background loops.

Nothing here reads the environment or decides anything: it connects the pieces."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from edgefleet.artifacts.blob_files import FilesystemBlobStore
from edgefleet.clock import Clock
from edgefleet.controllers.liveness import LivenessController
from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.services.alerts import AlertService
from edgefleet.server.services.approvals import ApprovalService
from edgefleet.server.services.attestation import AttestationService
from edgefleet.server.services.audit import AuditService
from edgefleet.server.services.blob_access import BlobAccess
from edgefleet.server.services.certificates import CertificateService
from edgefleet.server.services.checkpoints import CheckpointService
from edgefleet.server.services.dashboard import DashboardService
from edgefleet.server.services.dashboard_events import DashboardEvents
from edgefleet.server.services.ddi import DdiService
from edgefleet.server.services.deltas import DeltaService
from edgefleet.server.services.device_link import DeviceLinkService
from edgefleet.server.services.devices import DeviceService
from edgefleet.server.services.fleet_metrics import FleetMetricsService
from edgefleet.server.services.liveness_store import SqlLivenessStore
from edgefleet.server.services.migration_controller import MigrationController
from edgefleet.server.services.node_trends import forecast_destinations, node_trends_for
from edgefleet.server.services.placement_controller import PlacementController
from edgefleet.server.services.policies import PolicyService
from edgefleet.server.services.rehearsals import RehearsalService
from edgefleet.server.services.release_trains import ReleaseTrainService
from edgefleet.server.services.releases import ReleaseService
from edgefleet.server.services.roles import RoleService
from edgefleet.server.services.rollout_controller import RolloutController
from edgefleet.server.services.rollouts import RolloutService
from edgefleet.server.services.sealing import SealingService
from edgefleet.server.services.telemetry import TelemetryService
from edgefleet.server.services.tokens import TokenService
from edgefleet.server.services.training import TrainingService
from edgefleet.server.services.trust import TrustService
from edgefleet.server.services.ui_sessions import UiSessionService
from edgefleet.server.services.workload_controllers import WorkloadControllers
from edgefleet.server.services.workloads import WorkloadService
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database


@dataclass(frozen=True)
class Services:
    settings: ServerSettings
    db: Database
    devices: DeviceService
    tokens: TokenService
    device_link: DeviceLinkService
    audit: AuditService
    releases: ReleaseService
    deltas: DeltaService
    trust: TrustService
    watch: DesiredStateWatch
    metrics: ServerMetrics
    telemetry: TelemetryService
    alerts: AlertService
    fleet_metrics: FleetMetricsService
    workload_settings: WorkloadSettings
    workloads: WorkloadService
    checkpoints: CheckpointService
    blob_access: BlobAccess
    workload_controllers: WorkloadControllers
    rollouts: RolloutService
    rehearsals: RehearsalService
    policies: PolicyService
    roles: RoleService
    approvals: ApprovalService
    release_trains: ReleaseTrainService
    rollout_controller: RolloutController
    ddi: DdiService
    dashboard: DashboardService
    dashboard_events: DashboardEvents
    ui_sessions: UiSessionService
    attestation: AttestationService
    certificates: CertificateService
    sealing: SealingService
    training: TrainingService


def build_services(
    settings: ServerSettings,
    db: Database,
    clock: Clock,
    workload_settings: WorkloadSettings,
) -> Services:
    """Every service of one replica, built once from the process's settings."""
    server_metrics = ServerMetrics()
    watch = DesiredStateWatch(server_metrics.long_polls_waiting)
    blobs = FilesystemBlobStore(settings.data_dir / "blobs", max_blob_bytes=settings.max_blob_bytes)
    blobs.remove_partial_puts()
    trust = TrustService(settings.data_dir, db, clock)
    trust.reconcile_signed_releases()
    deltas = DeltaService(blobs, settings.data_dir / "deltas",
                          computes="deltas" in settings.role_names())  # fmt: skip
    releases = ReleaseService(
        db, blobs, clock, watch, deltas, ddi_releases=settings.ddi_release_names()
    )
    telemetry_service = TelemetryService(db, clock, watch, server_metrics, settings)
    trains = ReleaseTrainService(db, clock, lambda: controller.wake())
    controller = RolloutController(db, clock, watch, releases, telemetry_service, trains)
    checkpoints = CheckpointService(db, clock, blobs, workload_settings)
    trends = node_trends_for(workload_settings)  # once per heartbeat: drains, forecasts
    controllers = WorkloadControllers(
        workload_settings,
        clock,
        LivenessController(
            SqlLivenessStore(db),
            workload_settings.liveness_policy(),
            watching_since=clock.now(),
            trends=trends,
        ),
        MigrationController(db, clock, workload_settings, watch, blobs, checkpoints),
        PlacementController(db, clock, workload_settings, watch, trends),
    )
    token_service = TokenService(db, clock)
    dashboard_service = DashboardService(db, clock, workload_settings)
    return Services(
        settings=settings,
        db=db,
        devices=DeviceService(db, clock, watch),
        tokens=token_service,
        device_link=DeviceLinkService(db, clock, settings),
        audit=AuditService(db),
        releases=releases,
        deltas=deltas,
        trust=trust,
        watch=watch,
        metrics=server_metrics,
        telemetry=telemetry_service,
        alerts=AlertService(db, clock, watch, server_metrics),
        fleet_metrics=FleetMetricsService(db, clock, server_metrics),
        workload_settings=workload_settings,
        workloads=WorkloadService(
            db, clock, watch, blobs, forecast_destinations(workload_settings, trends)
        ),
        checkpoints=checkpoints,
        blob_access=BlobAccess(db),
        workload_controllers=controllers,
        rollouts=RolloutService(db, clock, controller.wake),
        rehearsals=RehearsalService(db, clock),
        policies=PolicyService(db, clock),
        roles=RoleService(db, clock),
        approvals=ApprovalService(db, clock, trust),
        release_trains=trains,
        rollout_controller=controller,
        ddi=DdiService(db, clock, settings, blobs, controller.wake),
        dashboard=dashboard_service,
        dashboard_events=DashboardEvents(dashboard_service),
        ui_sessions=UiSessionService(db, clock, token_service),
        attestation=AttestationService(
            db, clock, settings.attestation(), settings.trusted_tpm_cas()
        ),
        certificates=CertificateService(db, clock, settings),
        sealing=SealingService(db, clock, settings.data_dir, watch),
        training=TrainingService(db, clock, watch, blobs),
    )


def services(request: Request) -> Services:
    """The process's services, for a route (a FastAPI dependency)."""
    result: Services = request.app.state.services
    return result
