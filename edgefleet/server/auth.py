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
from edgefleet.server.composition import services
from edgefleet.server.error_handlers import request_id_of
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.device_link import DeviceLinkService
from edgefleet.server.tls import peer_certificate

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
