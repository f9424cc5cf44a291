"""Enrollment: the life of a device's admission to the fleet, as a table of legal moves.

pending ──approve──▶ approved ──revoke──▶ revoked (final: re-enroll with a new key)
   │                    ▲
   └──reject──▶ rejected┘ (an operator may still approve a rejected device)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from edgefleet.errors import DeviceNotApproved, IllegalTransition, Unauthenticated


class EnrollmentState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVOKED = "revoked"


class EnrollmentAction(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REVOKE = "revoke"


TRANSITIONS: dict[tuple[EnrollmentState, EnrollmentAction], EnrollmentState] = {
    (EnrollmentState.PENDING, EnrollmentAction.APPROVE): EnrollmentState.APPROVED,
    (EnrollmentState.PENDING, EnrollmentAction.REJECT): EnrollmentState.REJECTED,
    (EnrollmentState.REJECTED, EnrollmentAction.APPROVE): EnrollmentState.APPROVED,
    (EnrollmentState.APPROVED, EnrollmentAction.REVOKE): EnrollmentState.REVOKED,
    (EnrollmentState.PENDING, EnrollmentAction.REVOKE): EnrollmentState.REVOKED,
}


def transition(state: EnrollmentState, action: EnrollmentAction) -> EnrollmentState:
    """The state after `action`, or IllegalTransition naming both."""
    try:
        return TRANSITIONS[(state, action)]
    except KeyError:
        raise IllegalTransition(f"cannot {action} a device that is {state}") from None


_REFUSALS = {
    EnrollmentState.PENDING: (
        "device_pending",
        "device is pending approval by an operator (edgefleet devices approve ID)",
    ),
    EnrollmentState.REJECTED: ("device_rejected", "device enrollment was rejected by an operator"),
    EnrollmentState.REVOKED: (
        "device_revoked",
        "device identity was revoked; it must re-enroll with a new key",
    ),
}


def check_device_access(state: EnrollmentState) -> None:
    """Raise DeviceNotApproved with a clear reason unless the device may talk to the fleet."""
    if state is EnrollmentState.APPROVED:
        return
    code, message = _REFUSALS[state]
    raise DeviceNotApproved(message, code=code)


@dataclass(frozen=True)
class EnrollmentToken:
    """A bootstrap secret that lets devices enroll; only its hash is stored."""

    id: str
    description: str
    auto_approve: bool
    expires_at: datetime | None
    max_uses: int | None
    uses: int
    revoked: bool
    created_by: str
    created_at: datetime


def check_enrollment_token(token: EnrollmentToken, now: datetime) -> None:
    """Raise Unauthenticated with the reason unless `token` can admit one more device."""
    if token.revoked:
        raise Unauthenticated("enrollment token was revoked", code="enrollment_token_revoked")
    if token.expires_at is not None and now >= token.expires_at:
        raise Unauthenticated(
            f"enrollment token expired at {token.expires_at.isoformat()}",
            code="enrollment_token_expired",
        )
    if token.max_uses is not None and token.uses >= token.max_uses:
        raise Unauthenticated(
            f"enrollment token was used {token.uses} of {token.max_uses} times",
            code="enrollment_token_exhausted",
        )


def initial_state(token: EnrollmentToken) -> EnrollmentState:
    """Where a device enrolled with `token` starts."""
    return EnrollmentState.APPROVED if token.auto_approve else EnrollmentState.PENDING
