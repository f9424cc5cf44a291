"""The fleet telemetry policy, and the `telemetry` section of each device's desired state.

Operators keep one fleet-wide policy (`edgefleet telemetry policy set -f policy.yaml`): the
sampling part (core.sampling: metric sets, which are active, window lengths, how to adapt
to load and battery, upload intervals), which devices receive, a `detection` part
(core.kpi: KPIs, detector tuning, drift thresholds), which stays on the control plane, and
a `fidelity` part (core.telemetry.fidelity: thresholds near which devices sample finer).

Each device's desired state carries

    "telemetry": {"policy": {...sampling policy...}, "anomalous_metrics": [...],
                  "fine_metrics": [...], "coarse_metrics": [...]}

where `anomalous_metrics` are the metrics of the device's open alerts: the device samples
them finer (core.sampling) until the alert closes; `fine_metrics` and `coarse_metrics`,
present only when there is fidelity advice (core.telemetry.fidelity), are sampled finer
and coarser. A change of either bumps the device's
generation, so it reaches the agent through the long poll without a redeploy.

>>> section = render_telemetry_section(default_fleet_policy(), {"inference.latency_ms"})
>>> section["anomalous_metrics"]
['inference.latency_ms']
>>> from edgefleet.core.telemetry.sampling import read_telemetry_section
>>> read_telemetry_section(section)[1]
frozenset({'inference.latency_ms'})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgefleet.core.telemetry.fidelity import (
    FidelityAdvice,
    FidelityConfig,
    fidelity_to_document,
    parse_fidelity,
)
from edgefleet.core.telemetry.kpi import (
    DetectionConfig,
    default_detection,
    detection_to_document,
    parse_detection,
)
from edgefleet.core.telemetry.sampling import (
    TelemetryPolicy,
    default_policy,
    policy_from_document,
    policy_to_document,
)
from edgefleet.errors import InvalidInput

_SAMPLING_KEYS = frozenset(policy_to_document(default_policy()))
_SECTIONS = frozenset({"detection", "fidelity"})


@dataclass(frozen=True)
class FleetTelemetryPolicy:
    sampling: TelemetryPolicy
    detection: DetectionConfig
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)


def default_fleet_policy() -> FleetTelemetryPolicy:
    return FleetTelemetryPolicy(default_policy(), default_detection())


def parse_fleet_policy(document: Any) -> FleetTelemetryPolicy:
    """Validate a policy document as operators write it; InvalidInput names the key."""
    if not isinstance(document, Mapping):
        raise InvalidInput("telemetry policy: expected a mapping at the top", code="bad_policy")
    unknown = sorted(set(document) - _SAMPLING_KEYS - _SECTIONS)
    if unknown:
        raise InvalidInput(
            f"telemetry policy {unknown[0]}: unknown key (known: "
            f"{', '.join(sorted(_SAMPLING_KEYS | _SECTIONS))})",
            code="bad_policy",
        )
    sampling = policy_from_document({k: v for k, v in document.items() if k not in _SECTIONS})
    return FleetTelemetryPolicy(
        sampling,
        parse_detection(document.get("detection")),
        parse_fidelity(document.get("fidelity")),
    )


def fleet_policy_to_document(policy: FleetTelemetryPolicy) -> dict[str, Any]:
    """The complete policy as plain data, every default spelled out."""
    return {
        **policy_to_document(policy.sampling),
        "detection": detection_to_document(policy.detection),
        "fidelity": fidelity_to_document(policy.fidelity),
    }


def render_telemetry_section(
    policy: FleetTelemetryPolicy,
    anomalous_metrics: Iterable[str],
    advice: FidelityAdvice | None = None,
) -> dict[str, Any]:
    """The `telemetry` section of one device's desired state, with the fidelity advice
    (`fine_metrics`, `coarse_metrics`) when there is any."""
    section: dict[str, Any] = {
        "policy": policy_to_document(policy.sampling),
        "anomalous_metrics": sorted(set(anomalous_metrics)),
    }
    if advice is not None and advice.fine:
        section["fine_metrics"] = sorted(advice.fine)
    if advice is not None and advice.coarse:
        section["coarse_metrics"] = sorted(advice.coarse)
    return section
