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
downloads and uploads (/v1/blobs), which devices and operators share.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

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
