"""Installing a release on one device: the states, the legal moves, and what to do after
a restart.

    downloading ─▶ verifying ─▶ staged ─▶ installing ─▶ health-check ─▶ installed
         │             │          │           │              │
         └─────────────┴──────────┴───────────┴──▶ failed    └──▶ rolled-back

`failed` means nothing changed on the device (it still runs its previous slot);
`rolled-back` means the new slot was switched in, judged unhealthy, and switched out again.
The installer journals every state on disk before acting, so a restart resumes from the
journal (`resume_action`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from edgefleet.core.updates.service_manifest import HealthCriteria
from edgefleet.errors import IllegalTransition


class InstallState(StrEnum):
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGED = "staged"
    INSTALLING = "installing"
    HEALTH_CHECK = "health-check"
    INSTALLED = "installed"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"


FINAL_STATES = frozenset({InstallState.INSTALLED, InstallState.FAILED, InstallState.ROLLED_BACK})

TRANSITIONS: Mapping[InstallState, frozenset[InstallState]] = {
    InstallState.DOWNLOADING: frozenset({InstallState.VERIFYING, InstallState.FAILED}),
    InstallState.VERIFYING: frozenset({InstallState.STAGED, InstallState.FAILED}),
    InstallState.STAGED: frozenset({InstallState.INSTALLING, InstallState.FAILED}),
    InstallState.INSTALLING: frozenset({InstallState.HEALTH_CHECK, InstallState.ROLLED_BACK}),
    InstallState.HEALTH_CHECK: frozenset({InstallState.INSTALLED, InstallState.ROLLED_BACK}),
    InstallState.INSTALLED: frozenset(),
    InstallState.FAILED: frozenset(),
    InstallState.ROLLED_BACK: frozenset(),
}


def transition(current: InstallState, target: InstallState) -> InstallState:
    """`target` if the move is legal, else IllegalTransition."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"an install cannot go from {current} to {target}")
    return target


class ResumeAction(StrEnum):
    RESTART_DELIVERY = "restart-delivery"  # download again (partial files are resumed)
    WAIT_FOR_ACTIVATION = "wait-for-activation"
    SWITCH_IN = "switch-in"  # (re)do the slot switch, then the health window
    ROLL_BACK = "roll-back"
    NOTHING = "nothing"


# A release that keeps the agent from finishing its health window this many times is
# rolled back rather than retried forever.
MAX_HEALTH_ATTEMPTS = 2


def resume_action(state: InstallState, stage_only: bool, health_attempts: int) -> ResumeAction:
    """What a restarted agent does with a journaled install.

    Before the switch the running slot was never touched, so delivery simply starts over.
    After the switch the new slot is live: the health window is run again from the start,
    unless it was already interrupted MAX_HEALTH_ATTEMPTS times, which counts as unhealthy.
    """
    if state in FINAL_STATES:
        return ResumeAction.NOTHING
    if state in (InstallState.DOWNLOADING, InstallState.VERIFYING):
        return ResumeAction.RESTART_DELIVERY
    if state is InstallState.STAGED:
        return ResumeAction.WAIT_FOR_ACTIVATION if stage_only else ResumeAction.SWITCH_IN
    if health_attempts >= MAX_HEALTH_ATTEMPTS:
        return ResumeAction.ROLL_BACK
    return ResumeAction.SWITCH_IN


@dataclass(frozen=True)
class HealthSample:
    """One probe of the service during the health window; `reached` is False when the
    service did not answer at all (nothing listening yet, or a command check failing before
    its first success): such probes before the first answer mean "still starting"."""

    at_s: float
    ok: bool
    detail: str
    requests: int | None = None
    errors: int | None = None
    restarts: int = 0
    reached: bool = True


class HealthVerdictState(StrEnum):
    WATCHING = "watching"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class HealthVerdict:
    state: HealthVerdictState
    reason: str


# Consecutive failed probes after which the window ends early: the service has gone bad.
FAILED_PROBES_TO_GIVE_UP = 5


def judge_health(
    samples: Sequence[HealthSample], criteria: HealthCriteria, started_at_s: float, now_s: float
) -> HealthVerdict:
    """Judge the health window from its probes so far.

    The window opens at the service's first answer: until then it is starting, and
    unhealthy if it has not answered `start_period_s` after `started_at_s`. Unhealthy as
    soon as the service restarted (it crashed), or after FAILED_PROBES_TO_GIVE_UP
    consecutive failed probes in the window; at the end of the window, unhealthy if the
    last probe failed or the error rate (from the service's request/error counters) is
    above `max_error_rate` with at least `min_requests` requests; otherwise healthy.

    >>> from edgefleet.core.updates.service_manifest import HealthCriteria
    >>> ok = [HealthSample(t, True, "200", 10 * t, 0) for t in range(11)]
    >>> judge_health(ok, HealthCriteria(window_s=10), 0, 10).state
    <HealthVerdictState.HEALTHY: 'healthy'>
    """
    if any(s.restarts > 0 for s in samples):
        return HealthVerdict(
            HealthVerdictState.UNHEALTHY,
            "service exited and was restarted during the health window",
        )
    first = next((i for i, s in enumerate(samples) if s.reached), None)
    if first is None:
        detail = f": {samples[-1].detail}" if samples else ""
        if now_s - started_at_s >= criteria.start_period_s:
            return HealthVerdict(
                HealthVerdictState.UNHEALTHY,
                f"service did not answer within its start period of "
                f"{criteria.start_period_s:g} s{detail}",
            )
        return HealthVerdict(HealthVerdictState.WATCHING, f"service starting{detail}")
    return _judge_window(samples[first:], criteria, samples[first].at_s, now_s)


def _judge_window(
    samples: Sequence[HealthSample], criteria: HealthCriteria, started_at_s: float, now_s: float
) -> HealthVerdict:
    watching = HealthVerdict(HealthVerdictState.WATCHING, "health window running")
    tail = samples[-FAILED_PROBES_TO_GIVE_UP:]
    if len(tail) == FAILED_PROBES_TO_GIVE_UP and not any(s.ok for s in tail):
        return HealthVerdict(
            HealthVerdictState.UNHEALTHY,
            f"health check failed {FAILED_PROBES_TO_GIVE_UP} times in a row: {tail[-1].detail}",
        )
    if now_s - started_at_s < criteria.window_s:
        return watching
    last = samples[-1]
    if not last.ok:
        return HealthVerdict(
            HealthVerdictState.UNHEALTHY,
            f"health check failing at the end of the window: {last.detail}",
        )
    counted = [s for s in samples if s.requests is not None and s.errors is not None]
    if len(counted) >= 2:
        first, final = counted[0], counted[-1]
        assert first.requests is not None and final.requests is not None
        assert first.errors is not None and final.errors is not None
        requests = final.requests - first.requests
        errors = final.errors - first.errors
        if requests > 0 and requests >= criteria.min_requests:
            rate = errors / requests
            if rate > criteria.max_error_rate:
                return HealthVerdict(
                    HealthVerdictState.UNHEALTHY,
                    f"error rate {rate:.1%} ({errors}/{requests} requests) is above "
                    f"{criteria.max_error_rate:.1%}",
                )
    return HealthVerdict(HealthVerdictState.HEALTHY, f"healthy for {now_s - started_at_s:.0f}s")
