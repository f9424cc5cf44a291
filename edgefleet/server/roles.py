"""What a replica serves (`ServerSettings.roles`): routes of a role this replica lacks stay
mounted and answer 503 `role_not_served`, naming the replica and its roles, so a load
balancer that sends a request to the wrong replica gets a clear answer rather than a 404
that looks like an unknown route.

    api          operator routes (/v1/devices, /v1/rollouts, ..., /v1/leases, the dashboard)
    device       the device API (/v1/enroll, /v1/devices/{id}/desired|report|telemetry,
                 hawkBit DDI)
    controllers  the background loops, each under its database lease (services/leases.py)
    deltas       GET /v1/blobs/{sha256}/delta/{from}: computes and serves deltas

Routes every role needs stay open on every replica: /healthz, /readyz, /metrics, and blob
downloads and uploads (/v1/blobs), which devices and operators share. Within a router, a
route only devices call is the device role's (`split_by_role`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from edgefleet.errors import Unavailable
from edgefleet.server.settings import ServerSettings


def served_by(role: str) -> Callable[[Request], None]:
    """A dependency that refuses the request unless this replica has `role`."""

    def require_role(request: Request) -> None:
        settings: ServerSettings = request.app.state.services.settings
        if role not in settings.role_names():
            raise Unavailable(
                f"replica {settings.replica_id} does not serve the {role} role (its roles: "
                f"{settings.roles}); send this request to a replica that does",
                code="role_not_served",
            )

    return require_role


def split_by_role(
    router: APIRouter, role: str | None, served: frozenset[str]
) -> list[tuple[APIRouter, list[Any]]]:
    """`router`'s routes, in order, as runs of one role each, with the dependencies to
    include each run with: none when this replica (`served`: its roles) serves the role,
    else the `served_by` gate.

    Most routes are `role`'s (None: every replica's); a route only devices call (its
    declared authentication, `openapi.declared_auth`) is the device role's, and one both
    devices and operators call (blob and delta downloads) every replica's, so a router that
    mixes operator and device routes (attestation, certificates) is gated route by route.
    Call after `declare_auth`.
    """
    runs: list[tuple[str | None, APIRouter]] = []
    for route in router.routes:
        route_role = _role_of(route, role)
        if not runs or runs[-1][0] != route_role:
            runs.append((route_role, APIRouter()))
        runs[-1][1].routes.append(route)
    return [(part, [] if run_role is None or run_role in served
             else [Depends(served_by(run_role))])
            for run_role, part in runs]  # fmt: skip


def _role_of(route: BaseRoute, role: str | None) -> str | None:
    if role is None or not isinstance(route, APIRoute):
        return role
    callers = set((route.openapi_extra or {}).get("x-auth", []))
    if callers == {"device"}:
        return "device"
    if {"device", "operator"} <= callers:
        return None
    return role
