"""JSON forms of the rollout engine's records, for the store and the API.

What is kept of a `Rollout` is its progress (state, plan, wave, times, gate evaluations):
the spec is re-parsed from the stored manifest when the rollout is loaded, so the manifest
stays the one source of truth. Of a `RolloutDevice` only the stored fields are kept; the
observed ones are refreshed from the device before every decision.

Times are ISO 8601 in UTC with microseconds; floats that JSON cannot hold (inf, NaN, which
no gate should measure, but a store must never refuse) are written as strings.

>>> from edgefleet.core.rollouts.spec import parse_rollout_spec
>>> spec = parse_rollout_spec({"release": "det@2.0.0"})
>>> r = Rollout("ro-1", spec)
>>> rollout_from_json("ro-1", spec, rollout_to_json(r)) == r
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from edgefleet.core.rollouts.gates import GateResult, GateVerdict
from edgefleet.core.rollouts.rollout import (
    DeviceState,
    GateEvaluation,
    Rollout,
    RolloutDevice,
    RolloutState,
)
from edgefleet.core.rollouts.spec import RolloutSpec
from edgefleet.core.rollouts.waves import Wave, WavePlan
from edgefleet.errors import InvalidInput

CODEC_VERSION = 1
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def time_to_json(t: datetime | None) -> str | None:
    """`2026-03-02T12:00:00.000001+00:00`, or None."""
    if t is None:
        return None
    if t.utcoffset() is None:
        raise InvalidInput(f"time {t.isoformat()} has no time zone")
    return t.astimezone(UTC).isoformat(timespec="microseconds")


def time_from_json(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"expected an ISO 8601 time, got {value!r}")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"expected an ISO 8601 time, got {value!r}") from None
    if t.utcoffset() is None:
        raise InvalidInput(f"time {value!r} has no time zone")
    return t.astimezone(UTC)


def _float_to_json(x: float | None) -> float | str | None:
    if x is None or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _float_from_json(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"expected a number, got {value!r}")
    return float(value)


def _required_time(value: object, what: str) -> datetime:
    t = time_from_json(value)
    if t is None:
        raise InvalidInput(f"{what}: a time is required")
    return t


# Gates.


def gate_result_to_json(result: GateResult) -> dict[str, Any]:
    return {
        "gate": result.gate,
        "verdict": result.verdict.value,
        "measured": _float_to_json(result.measured),
        "threshold": _float_to_json(result.threshold),
        "unit": result.unit,
        "devices": result.devices,
        "samples": result.samples,
        "reason": result.reason,
    }


def gate_result_from_json(data: Mapping[str, Any]) -> GateResult:
    threshold = _float_from_json(data["threshold"])
    assert threshold is not None
    return GateResult(
        gate=str(data["gate"]),
        verdict=GateVerdict(data["verdict"]),
        measured=_float_from_json(data["measured"]),
        threshold=threshold,
        unit=str(data["unit"]),
        devices=int(data["devices"]),
        samples=int(data["samples"]),
        reason=str(data["reason"]),
    )


def gate_evaluation_to_json(evaluation: GateEvaluation) -> dict[str, Any]:
    return {
        "wave": evaluation.wave,
        "at": time_to_json(evaluation.at),
        "verdict": evaluation.verdict.value,
        "results": [gate_result_to_json(r) for r in evaluation.results],
        "reason": evaluation.reason,
    }


def gate_evaluation_from_json(data: Mapping[str, Any]) -> GateEvaluation:
    return GateEvaluation(
        wave=int(data["wave"]),
        at=_required_time(data["at"], "gate evaluation"),
        verdict=GateVerdict(data["verdict"]),
        results=tuple(gate_result_from_json(r) for r in data["results"]),
        reason=str(data["reason"]),
    )


# The wave plan.


def plan_to_json(plan: WavePlan) -> dict[str, Any]:
    return {
        "rollout_id": plan.seed,  # the seed's old key (plans frozen before hold the id)
        "waves": [
            {"label": w.label, "device_ids": list(w.device_ids), "soak_s": w.soak_s}
            for w in plan.waves
        ],
    }


def plan_from_json(data: Mapping[str, Any]) -> WavePlan:
    waves: Sequence[Mapping[str, Any]] = data["waves"]
    return WavePlan(
        str(data["rollout_id"]),
        tuple(
            Wave(i, str(w["label"]), tuple(str(d) for d in w["device_ids"]), float(w["soak_s"]))
            for i, w in enumerate(waves)
        ),
    )


# The rollout.


def rollout_to_json(rollout: Rollout) -> dict[str, Any]:
    """The rollout's progress (everything but its id and spec)."""
    return {
        "codec": CODEC_VERSION,
        "state": rollout.state.value,
        "reason": rollout.reason,
        "plan": None if rollout.plan is None else plan_to_json(rollout.plan),
        "wave": rollout.wave,
        "started_at": time_to_json(rollout.started_at),
        "soak_until": time_to_json(rollout.soak_until),
        "gate_wait_until": time_to_json(rollout.gate_wait_until),
        "rollback_started_at": time_to_json(rollout.rollback_started_at),
        "recent_assignments": [time_to_json(t) for t in rollout.recent_assignments],
        "gate_evaluations": [gate_evaluation_to_json(e) for e in rollout.gate_evaluations],
    }


def rollout_from_json(rollout_id: str, spec: RolloutSpec, data: Mapping[str, Any]) -> Rollout:
    """The rollout `rollout_to_json` wrote, with its spec re-parsed by the caller."""
    if data.get("codec") != CODEC_VERSION:
        raise InvalidInput(
            f"rollout {rollout_id}: stored progress has codec {data.get('codec')!r}, "
            f"this version reads {CODEC_VERSION}"
        )
    plan = data.get("plan")
    return Rollout(
        id=rollout_id,
        spec=spec,
        state=RolloutState(data["state"]),
        reason=str(data["reason"]),
        plan=None if plan is None else plan_from_json(plan),
        wave=int(data["wave"]),
        started_at=time_from_json(data.get("started_at")),
        soak_until=time_from_json(data.get("soak_until")),
        gate_wait_until=time_from_json(data.get("gate_wait_until")),
        rollback_started_at=time_from_json(data.get("rollback_started_at")),
        recent_assignments=tuple(
            _required_time(t, "recent assignment") for t in data.get("recent_assignments", [])
        ),
        gate_evaluations=tuple(
            gate_evaluation_from_json(e) for e in data.get("gate_evaluations", [])
        ),
    )


# Device records.


def device_to_json(device: RolloutDevice) -> dict[str, Any]:
    """The stored fields of a device record."""
    return {
        "device_id": device.device_id,
        "state": device.state.value,
        "attempts": device.attempts,
        "assigned_at": time_to_json(device.assigned_at),
        "retry_at": time_to_json(device.retry_at),
        "previous_release": device.previous_release,
        "reason": device.reason,
    }


def device_from_json(data: Mapping[str, Any]) -> RolloutDevice:
    """A device record with its stored fields; observed fields keep their defaults."""
    previous = data.get("previous_release")
    return RolloutDevice(
        device_id=str(data["device_id"]),
        state=DeviceState(data["state"]),
        attempts=int(data["attempts"]),
        assigned_at=time_from_json(data.get("assigned_at")),
        retry_at=time_from_json(data.get("retry_at")),
        previous_release=None if previous is None else str(previous),
        reason=str(data.get("reason", "")),
    )
