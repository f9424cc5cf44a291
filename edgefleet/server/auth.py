"""Request authentication for the two audiences: operators (bearer API tokens with a role)
and devices (Ed25519-signed requests, or a device certificate over mutual TLS)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from edgefleet.core.device import Device
from edgefleet.errors import Forbidden, Unauthenticated
from edgefleet.security.rbac import Permission
from edgefleet.security.request_signing import SignedRequest, read_signed_headers
from edgefleet.server.error_handlers import request_id_of
from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.services.alerts import AlertService
from edgefleet.server.services.approvals import ApprovalService
from edgefleet.server.services.attestation import AttestationService
from edgefleet.server.services.audit import AuditService, OperatorContext
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
from edgefleet.server.tls import peer_certificate
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


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


# The dashboard's session (`services/ui_sessions.py`) rides in this cookie (HttpOnly,
# SameSite=Strict). A request it authenticates that changes something must also carry
# CSRF_HEADER, which a page of another origin cannot add without a CORS preflight this
# server never grants, and an Origin, when sent, of this very host.
SESSION_COOKIE = "edgefleet_session"
CSRF_HEADER = "x-edgefleet-csrf"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _session_operator(request: Request, secret: str) -> OperatorContext:
    if request.method not in _SAFE_METHODS:
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if request.headers.get(CSRF_HEADER) != "1" or (
            origin is not None and urlsplit(origin).netloc != host
        ):
            raise Forbidden(
                f"a change made with a dashboard session must come from the dashboard "
                f"(header {CSRF_HEADER}: 1, same origin)",
                code="csrf_check_failed",
            )
    principal = services(request).tokens.authenticate(secret)
    return OperatorContext(principal, request_id_of(request))


def operator(request: Request) -> OperatorContext:
    """Dependency: the operator behind the request's bearer token, or the dashboard session
    in its cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    session = request.cookies.get(SESSION_COOKIE)
    if not header and session:
        return _session_operator(request, session)
    if not header:
        raise Unauthenticated(
            "missing API token: send 'Authorization: Bearer TOKEN' "
            "(CLI: --token or EDGEFLEET_TOKEN)",
            code="missing_token",
        )
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("Authorization header must be 'Bearer TOKEN'", code="bad_auth_scheme")
    principal = services(request).tokens.authenticate(secret.strip())
    return OperatorContext(principal, request_id_of(request))


class OperatorAuth:
    """Dependency: the operator behind the bearer token, holding `permission` (None: any
    role may call the route). The route's OpenAPI operation shows it as `x-permission`."""

    def __init__(self, permission: Permission | None) -> None:
        self.permission = permission

    def __call__(self, request: Request) -> OperatorContext:
        ctx = operator(request)
        if self.permission is not None:
            ctx.require(self.permission)
        return ctx


_REQUIRES = {permission: OperatorAuth(permission) for permission in Permission}
any_operator = OperatorAuth(None)


def requires(permission: Permission) -> OperatorAuth:
    """The dependency of an operator route that needs `permission`."""
    return _REQUIRES[permission]


def no_credentials() -> None:
    """Dependency that declares a route open to anyone (health, metrics, enrollment: the
    enrollment token and the key's signature are checked by the service)."""


def request_target(request: Request) -> str:
    """The path and query exactly as sent, which is what the device signed."""
    raw_path: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    query: bytes = request.scope.get("query_string", b"")
    target = raw_path.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


async def _authenticate_device(request: Request, device_id: str | None) -> Device:
    certificate = peer_certificate(request)
    if certificate is not None:
        # Mutual TLS: the handshake proved the key; the device's status is read every time.
        return await run_in_threadpool(services(request).certificates.authenticate,
                                       certificate, device_id)  # fmt: skip
    body = await request.body()
    signed = read_signed_headers(request.headers)
    return await run_in_threadpool(
        services(request).device_link.authenticate,
        signed,
        request.method,
        request_target(request),
        body,
        device_id,
    )


async def signed_device(request: Request, device_id: str) -> Device:
    """Dependency: the approved device that signed this request for `device_id`."""
    return await _authenticate_device(request, device_id)


@dataclass(frozen=True)
class DeviceUpload:
    """A signed device request whose headers passed every check that needs no body; the
    body is still unread, and the signature over it still to be verified."""

    device: Device
    signed: SignedRequest
    method: str
    target: str
    device_link: DeviceLinkService

    async def verify(self, body_sha256: str) -> Device:
        """The device, once the signature over the streamed body's sha256 holds (and its
        nonce is recorded); Unauthenticated otherwise."""
        return await run_in_threadpool(self.device_link.authenticate_digest, self.signed,
                                       self.method, self.target, body_sha256,
                                       self.device.id)  # fmt: skip


async def signed_device_upload(request: Request, device_id: str) -> DeviceUpload:
    """Dependency for a large device upload: the device, its approval, the timestamp, the
    nonce and the path are checked before a byte of the body is read (the signature covers
    the body's hash, so the route streams the body to disk and then calls `verify`)."""
    signed = read_signed_headers(request.headers)
    link = services(request).device_link
    device = await run_in_threadpool(link.admit, signed, device_id)
    return DeviceUpload(device, signed, request.method, request_target(request), link)


class DeviceOrOperatorAuth:
    """Dependency for shared downloads (blobs, TUF metadata, endpoints): an operator with a
    bearer token holding `permission`, or any approved device with a signed request."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Device | OperatorContext:
        if "authorization" in request.headers:
            return await run_in_threadpool(requires(self.permission), request)
        return await _authenticate_device(request, None)


device_or_operator = DeviceOrOperatorAuth(Permission.FLEET_READ)
