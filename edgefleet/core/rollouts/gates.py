"""Gates: the health checks a rollout must pass before it updates more devices.

Gates are evaluated at the end of a wave's soak over every device the rollout has reached so
far (waves 0..N, cumulatively, so each later wave adds evidence):

- `install_failure_rate` — devices whose last install attempt failed, or that rolled
  back locally, as a share of the devices that finished installing; passes at or below
  `max_percent`. Samples are devices.
- `workload_error_rate` — workload errors per request on the updated devices since their
  update; passes at or below `max_percent`. Samples are requests.
- `kpi` — a KPI on the updated devices after the update against the same devices' baseline
  from before the rollout: the mean over devices after, compared with the mean over the same
  devices before (each device weighs the same). A limit is a relative change in percent
  (`max_increase_percent: 20` for p95 latency) or an absolute one in the KPI's own unit
  (`max_increase: 1` for an error rate in percent, i.e. one point), up or down.

Minimum sample size: a gate whose evidence is below `min_devices` (or, where it applies,
`min_samples`) says `insufficient-data` — it neither passes nor fails, so one device cannot
decide. What happens then is the rollout's rule (`GatesSpec.insufficient_data_*`): keep
soaking up to a wait, re-evaluating, then promote or fail.

`parse_gates` reads the `gates` section of a rollout manifest; `evaluate_gates` is pure and
takes the install outcome of each device the rollout reached plus its telemetry summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from edgefleet.core.manifest import (
    check_keys,
    read_choice,
    read_duration_s,
    read_int,
    read_list,
    read_mapping,
    read_number,
    read_string,
)
from edgefleet.core.telemetry.kpi import KpiReading
from edgefleet.errors import InvalidInput

DEFAULT_MIN_DEVICES = 2
DEFAULT_MIN_REQUESTS = 100
DEFAULT_MIN_KPI_SAMPLES = 20
MAX_INSUFFICIENT_DATA_WAIT_S = 30 * 86400


class InstallOutcome(StrEnum):
    IN_PROGRESS = "in-progress"
    INSTALLED = "installed"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"  # the agent undid the install (failed health window)


class GateVerdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INSUFFICIENT_DATA = "insufficient-data"


class KpiLimit(StrEnum):
    MAX_INCREASE_PERCENT = "max_increase_percent"
    MAX_INCREASE = "max_increase"
    MAX_DECREASE_PERCENT = "max_decrease_percent"
    MAX_DECREASE = "max_decrease"


class InsufficientDataAction(StrEnum):
    PROMOTE = "promote"
    FAIL = "fail"


@dataclass(frozen=True)
class InstallFailureGate:
    max_percent: float
    min_devices: int = DEFAULT_MIN_DEVICES

    name = "install_failure_rate"


@dataclass(frozen=True)
class WorkloadErrorGate:
    max_percent: float
    min_devices: int = DEFAULT_MIN_DEVICES
    min_requests: int = DEFAULT_MIN_REQUESTS

    name = "workload_error_rate"


@dataclass(frozen=True)
class KpiGate:
    kpi: str
    limit: KpiLimit
    threshold: float
    min_devices: int = DEFAULT_MIN_DEVICES
    min_samples: int = DEFAULT_MIN_KPI_SAMPLES  # per device, before and after

    @property
    def name(self) -> str:
        return f"kpi:{self.kpi}"


@dataclass(frozen=True)
class GatesSpec:
    """The gates of a rollout and what to do when they lack data."""

    install_failure_rate: InstallFailureGate | None = None
    workload_error_rate: WorkloadErrorGate | None = None
    kpis: tuple[KpiGate, ...] = ()
    # After the soak ends with insufficient data: keep waiting this long (None: one more
    # soak of the wave), then take the action.
    insufficient_data_wait_s: float | None = None
    insufficient_data_action: InsufficientDataAction = InsufficientDataAction.PROMOTE

    @property
    def declared(self) -> bool:
        return bool(self.install_failure_rate or self.workload_error_rate or self.kpis)


@dataclass(frozen=True)
class DeviceTelemetry:
    """What telemetry says about one device for the gates."""

    workload_requests: int = 0  # since the device was updated
    workload_errors: int = 0
    # KPI name -> reading over the baseline period before the rollout touched the device,
    # and over the period since its update (`kpi.kpi_reading` computes both).
    kpis_before: Mapping[str, KpiReading] = field(default_factory=dict)
    kpis_after: Mapping[str, KpiReading] = field(default_factory=dict)


@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: GateVerdict
    measured: float | None  # None when there is nothing to measure
    threshold: float
    unit: str  # "%" or "" (the KPI's own unit)
    devices: int
    samples: int
    reason: str


def _pct(value: float) -> str:
    return f"{value:.3g}%"


def _insufficient(
    gate: str, threshold: float, unit: str, devices: int, samples: int, reason: str
) -> GateResult:
    return GateResult(
        gate, GateVerdict.INSUFFICIENT_DATA, None, threshold, unit, devices, samples, reason
    )


def evaluate_install_failure_rate(
    gate: InstallFailureGate, outcomes: Mapping[str, InstallOutcome]
) -> GateResult:
    """The share of finished installs that failed or were undone by the agent."""
    done = [o for o in outcomes.values() if o is not InstallOutcome.IN_PROGRESS]
    failed = sum(o is not InstallOutcome.INSTALLED for o in done)
    if len(done) < gate.min_devices:
        return _insufficient(
            gate.name,
            gate.max_percent,
            "%",
            len(done),
            len(done),
            f"{len(done)} device(s) finished installing; {gate.min_devices} are needed to decide",
        )
    rate = failed * 100 / len(done)
    ok = rate <= gate.max_percent
    return GateResult(
        gate.name,
        GateVerdict.PASS if ok else GateVerdict.FAIL,
        rate,
        gate.max_percent,
        "%",
        len(done),
        len(done),
        f"{failed} of {len(done)} devices failed to install "
        f"({_pct(rate)} {'<=' if ok else '>'} {_pct(gate.max_percent)})",
    )


def evaluate_workload_error_rate(
    gate: WorkloadErrorGate,
    outcomes: Mapping[str, InstallOutcome],
    telemetry: Mapping[str, DeviceTelemetry],
) -> GateResult:
    """Workload errors per request on the installed devices since their update."""
    reporting = [
        telemetry[d]
        for d in sorted(outcomes)
        if outcomes[d] is InstallOutcome.INSTALLED
        and d in telemetry
        and telemetry[d].workload_requests > 0
    ]
    requests = sum(t.workload_requests for t in reporting)
    errors = sum(t.workload_errors for t in reporting)
    if len(reporting) < gate.min_devices or requests < gate.min_requests:
        return _insufficient(
            gate.name,
            gate.max_percent,
            "%",
            len(reporting),
            requests,
            f"{requests} request(s) on {len(reporting)} updated device(s); "
            f"{gate.min_requests} requests on {gate.min_devices} devices are needed to decide",
        )
    rate = errors * 100 / requests
    ok = rate <= gate.max_percent
    return GateResult(
        gate.name,
        GateVerdict.PASS if ok else GateVerdict.FAIL,
        rate,
        gate.max_percent,
        "%",
        len(reporting),
        requests,
        f"{errors} errors in {requests} requests on {len(reporting)} updated devices "
        f"({_pct(rate)} {'<=' if ok else '>'} {_pct(gate.max_percent)})",
    )


def _kpi_change(gate: KpiGate, before: float, after: float) -> float | None:
    """The regression in the gate's terms (positive is worse), None if unbounded."""
    delta = after - before
    if gate.limit in (KpiLimit.MAX_DECREASE, KpiLimit.MAX_DECREASE_PERCENT):
        delta = -delta
    if gate.limit in (KpiLimit.MAX_INCREASE, KpiLimit.MAX_DECREASE):
        return delta
    if before == 0:
        return 0.0 if delta <= 0 else None
    return delta * 100 / abs(before)


def evaluate_kpi(
    gate: KpiGate,
    outcomes: Mapping[str, InstallOutcome],
    telemetry: Mapping[str, DeviceTelemetry],
) -> GateResult:
    """Mean KPI after the update against the mean before it, over the same devices."""
    relative = gate.limit in (KpiLimit.MAX_INCREASE_PERCENT, KpiLimit.MAX_DECREASE_PERCENT)
    unit = "%" if relative else ""
    pairs: list[tuple[KpiReading, KpiReading]] = []
    for device_id in sorted(outcomes):
        t = telemetry.get(device_id)
        if outcomes[device_id] is not InstallOutcome.INSTALLED or t is None:
            continue
        before, after = t.kpis_before.get(gate.kpi), t.kpis_after.get(gate.kpi)
        if before and after and min(before.samples, after.samples) >= gate.min_samples:
            pairs.append((before, after))
    samples = sum(after.samples for _, after in pairs)
    if len(pairs) < gate.min_devices:
        return _insufficient(
            gate.name,
            gate.threshold,
            unit,
            len(pairs),
            samples,
            f"{len(pairs)} updated device(s) have a baseline and {gate.min_samples}+ samples "
            f"of {gate.kpi}; {gate.min_devices} are needed to decide",
        )
    mean_before = sum(b.value for b, _ in pairs) / len(pairs)
    mean_after = sum(a.value for _, a in pairs) / len(pairs)
    change = _kpi_change(gate, mean_before, mean_after)
    ok = change is not None and change <= gate.threshold
    direction = "rise" if "increase" in gate.limit else "drop"
    shown = "unbounded (baseline 0)" if change is None else f"{change:+.3g}{unit}"
    return GateResult(
        gate.name,
        GateVerdict.PASS if ok else GateVerdict.FAIL,
        change,
        gate.threshold,
        unit,
        len(pairs),
        samples,
        f"{gate.kpi} averaged {mean_after:.4g} after vs {mean_before:.4g} before on "
        f"{len(pairs)} devices: {direction} {shown} "
        f"({'within' if ok else 'beyond'} the limit of {gate.threshold:g}{unit})",
    )


def evaluate_gates(
    spec: GatesSpec,
    outcomes: Mapping[str, InstallOutcome],
    telemetry: Mapping[str, DeviceTelemetry],
) -> tuple[GateResult, ...]:
    """One result per declared gate, over the devices in `outcomes`."""
    results: list[GateResult] = []
    if spec.install_failure_rate is not None:
        results.append(evaluate_install_failure_rate(spec.install_failure_rate, outcomes))
    if spec.workload_error_rate is not None:
        results.append(evaluate_workload_error_rate(spec.workload_error_rate, outcomes, telemetry))
    results.extend(evaluate_kpi(gate, outcomes, telemetry) for gate in spec.kpis)
    return tuple(results)


def overall_verdict(results: Sequence[GateResult]) -> GateVerdict:
    """FAIL if any gate failed, else INSUFFICIENT_DATA if any lacks data, else PASS."""
    verdicts = {r.verdict for r in results}
    if GateVerdict.FAIL in verdicts:
        return GateVerdict.FAIL
    if GateVerdict.INSUFFICIENT_DATA in verdicts:
        return GateVerdict.INSUFFICIENT_DATA
    return GateVerdict.PASS


def _kpi_gate(value: object, path: str) -> KpiGate:
    data = read_mapping(value, path)
    limits = [limit for limit in KpiLimit if limit.value in data]
    check_keys(data, frozenset({"kpi", "min_devices", "min_samples", *KpiLimit}), path)
    if len(limits) != 1:
        raise InvalidInput(f"{path}: give exactly one of {', '.join(KpiLimit)}")
    limit = limits[0]
    high = 100.0 if limit is KpiLimit.MAX_DECREASE_PERCENT else 1e12
    kpi = read_string(data.get("kpi"), f"{path}.kpi")
    return KpiGate(
        kpi=kpi,
        limit=limit,
        threshold=read_number(data[limit.value], f"{path}.{limit.value}", 0, high),
        min_devices=read_int(
            data.get("min_devices", DEFAULT_MIN_DEVICES), f"{path}.min_devices", 1, 1_000_000
        ),
        min_samples=read_int(
            data.get("min_samples", DEFAULT_MIN_KPI_SAMPLES), f"{path}.min_samples", 0, 10**12
        ),
    )


def parse_gates(value: object, path: str) -> GatesSpec:
    """The `gates` section of a rollout manifest; InvalidInput names the field path."""
    data = read_mapping(value, path)
    check_keys(
        data,
        frozenset({"install_failure_rate", "workload_error_rate", "kpis", "insufficient_data"}),
        path,
    )
    install = workload = None
    if "install_failure_rate" in data:
        p = f"{path}.install_failure_rate"
        gate = read_mapping(data["install_failure_rate"], p)
        check_keys(gate, frozenset({"max_percent", "min_devices"}), p)
        install = InstallFailureGate(
            max_percent=read_number(gate.get("max_percent"), f"{p}.max_percent", 0, 100),
            min_devices=read_int(
                gate.get("min_devices", DEFAULT_MIN_DEVICES), f"{p}.min_devices", 1, 1_000_000
            ),
        )
    if "workload_error_rate" in data:
        p = f"{path}.workload_error_rate"
        gate = read_mapping(data["workload_error_rate"], p)
        check_keys(gate, frozenset({"max_percent", "min_devices", "min_requests"}), p)
        workload = WorkloadErrorGate(
            max_percent=read_number(gate.get("max_percent"), f"{p}.max_percent", 0, 100),
            min_devices=read_int(
                gate.get("min_devices", DEFAULT_MIN_DEVICES), f"{p}.min_devices", 1, 1_000_000
            ),
            min_requests=read_int(
                gate.get("min_requests", DEFAULT_MIN_REQUESTS), f"{p}.min_requests", 0, 10**12
            ),
        )
    kpis = tuple(
        _kpi_gate(item, f"{path}.kpis[{i}]")
        for i, item in enumerate(read_list(data.get("kpis", []), f"{path}.kpis"))
    )
    names = [k.kpi for k in kpis]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidInput(f"{path}.kpis[{i}].kpi: {name!r} already has a gate")
    p = f"{path}.insufficient_data"
    policy = read_mapping(data.get("insufficient_data", {}), p)
    check_keys(policy, frozenset({"wait", "then"}), p)
    wait = policy.get("wait")
    return GatesSpec(
        install_failure_rate=install,
        workload_error_rate=workload,
        kpis=kpis,
        insufficient_data_wait_s=None
        if wait is None
        else read_duration_s(wait, f"{p}.wait", MAX_INSUFFICIENT_DATA_WAIT_S),
        insufficient_data_action=read_choice(
            policy.get("then", "promote"), f"{p}.then", InsufficientDataAction
        ),
    )
