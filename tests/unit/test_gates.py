from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.rollouts.gates import (
    DeviceTelemetry,
    GateResult,
    GatesSpec,
    GateVerdict,
    InstallFailureGate,
    InstallOutcome,
    InsufficientDataAction,
    KpiGate,
    KpiLimit,
    WorkloadErrorGate,
    evaluate_gates,
    evaluate_install_failure_rate,
    evaluate_kpi,
    evaluate_workload_error_rate,
    overall_verdict,
    parse_gates,
)
from edgefleet.core.telemetry.kpi import KpiReading
from edgefleet.errors import InvalidInput

OK, F, RB, P = (
    InstallOutcome.INSTALLED,
    InstallOutcome.FAILED,
    InstallOutcome.ROLLED_BACK,
    InstallOutcome.IN_PROGRESS,
)


def outcomes(*values: InstallOutcome) -> dict[str, InstallOutcome]:
    return {f"d{i}": v for i, v in enumerate(values)}


def kpis(before: float, after: float, samples: int = 100) -> DeviceTelemetry:
    return DeviceTelemetry(
        kpis_before={"p95_ms": KpiReading("p95_ms", before, samples)},
        kpis_after={"p95_ms": KpiReading("p95_ms", after, samples)},
    )


# --- install failure rate -------------------------------------------------------------------


def test_install_failure_rate_pass_and_fail() -> None:
    gate = InstallFailureGate(max_percent=20, min_devices=2)
    ok = evaluate_install_failure_rate(gate, outcomes(OK, OK, OK, OK, F))
    assert (ok.verdict, ok.measured, ok.threshold, ok.devices) == (GateVerdict.PASS, 20, 20, 5)
    assert ok.reason == "1 of 5 devices failed to install (20% <= 20%)"
    bad = evaluate_install_failure_rate(gate, outcomes(OK, OK, F, F))
    assert (bad.verdict, bad.measured) == (GateVerdict.FAIL, 50)
    assert bad.reason == "2 of 4 devices failed to install (50% > 20%)"


def test_local_rollbacks_count_as_failures_and_installs_in_progress_do_not_count() -> None:
    gate = InstallFailureGate(max_percent=10, min_devices=1)
    result = evaluate_install_failure_rate(gate, outcomes(OK, RB, P, P, P))
    assert (result.verdict, result.measured, result.samples) == (GateVerdict.FAIL, 50, 2)


def test_one_device_cannot_decide_the_install_gate() -> None:
    gate = InstallFailureGate(max_percent=0, min_devices=2)
    result = evaluate_install_failure_rate(gate, outcomes(F, P))
    assert result.verdict is GateVerdict.INSUFFICIENT_DATA
    assert result.measured is None
    assert "1 device(s) finished installing; 2 are needed" in result.reason


# --- workload error rate --------------------------------------------------------------------


def test_workload_error_rate() -> None:
    gate = WorkloadErrorGate(max_percent=1, min_devices=2, min_requests=100)
    telemetry = {
        "d0": DeviceTelemetry(workload_requests=600, workload_errors=3),
        "d1": DeviceTelemetry(workload_requests=400, workload_errors=7),
        "d2": DeviceTelemetry(workload_requests=10_000, workload_errors=10_000),  # failed
    }
    result = evaluate_workload_error_rate(gate, outcomes(OK, OK, F), telemetry)
    assert (result.verdict, result.measured, result.samples, result.devices) == (
        GateVerdict.PASS,
        1.0,
        1000,
        2,
    )
    telemetry["d1"] = DeviceTelemetry(workload_requests=400, workload_errors=8)
    result = evaluate_workload_error_rate(gate, outcomes(OK, OK, F), telemetry)
    assert result.verdict is GateVerdict.FAIL
    assert result.reason == "11 errors in 1000 requests on 2 updated devices (1.1% > 1%)"


def test_workload_error_rate_needs_requests_and_devices() -> None:
    gate = WorkloadErrorGate(max_percent=1, min_devices=2, min_requests=100)
    busy_one = {"d0": DeviceTelemetry(workload_requests=5000, workload_errors=5000)}
    assert (
        evaluate_workload_error_rate(gate, outcomes(OK, OK), busy_one).verdict
        is GateVerdict.INSUFFICIENT_DATA
    )
    quiet = {f"d{i}": DeviceTelemetry(workload_requests=10, workload_errors=10) for i in range(5)}
    result = evaluate_workload_error_rate(gate, outcomes(OK, OK, OK, OK, OK), quiet)
    assert result.verdict is GateVerdict.INSUFFICIENT_DATA
    assert result.samples == 50
    idle = {"d0": DeviceTelemetry(), "d1": DeviceTelemetry()}
    assert evaluate_workload_error_rate(gate, outcomes(OK, OK), idle).devices == 0


# --- KPI regressions ------------------------------------------------------------------------


def test_kpi_relative_increase() -> None:
    gate = KpiGate("p95_ms", KpiLimit.MAX_INCREASE_PERCENT, 20, min_devices=2, min_samples=20)
    fine = {"d0": kpis(100, 110), "d1": kpis(200, 230)}  # means 150 -> 170: +13.3%
    result = evaluate_kpi(gate, outcomes(OK, OK), fine)
    assert result.verdict is GateVerdict.PASS
    assert result.measured == pytest.approx(13.333, abs=1e-3)
    assert result.unit == "%"
    assert result.gate == "kpi:p95_ms"
    slow = {"d0": kpis(100, 130), "d1": kpis(200, 250)}  # 150 -> 190: +26.7%
    result = evaluate_kpi(gate, outcomes(OK, OK), slow)
    assert result.verdict is GateVerdict.FAIL
    assert "p95_ms averaged 190 after vs 150 before on 2 devices: rise +26.7%" in result.reason


def test_kpi_absolute_increase_in_points() -> None:
    gate = KpiGate("error_rate_pct", KpiLimit.MAX_INCREASE, 1, min_devices=1, min_samples=1)

    def rate(before: float, after: float) -> DeviceTelemetry:
        return DeviceTelemetry(
            kpis_before={"error_rate_pct": KpiReading("error_rate_pct", before, 50)},
            kpis_after={"error_rate_pct": KpiReading("error_rate_pct", after, 50)},
        )

    assert evaluate_kpi(gate, outcomes(OK), {"d0": rate(0.5, 1.5)}).verdict is GateVerdict.PASS
    result = evaluate_kpi(gate, outcomes(OK), {"d0": rate(0.5, 1.6)})
    assert result.verdict is GateVerdict.FAIL
    assert result.unit == ""


def test_kpi_decrease_limits() -> None:
    relative = KpiGate("fps", KpiLimit.MAX_DECREASE_PERCENT, 10, min_devices=1, min_samples=1)
    telemetry = {
        "d0": DeviceTelemetry(
            kpis_before={"fps": KpiReading("fps", 30, 10)},
            kpis_after={"fps": KpiReading("fps", 26, 10)},
        )
    }
    result = evaluate_kpi(relative, outcomes(OK), telemetry)
    assert (result.verdict, round(result.measured or 0, 2)) == (GateVerdict.FAIL, 13.33)
    absolute = KpiGate("fps", KpiLimit.MAX_DECREASE, 5, min_devices=1, min_samples=1)
    assert evaluate_kpi(absolute, outcomes(OK), telemetry).verdict is GateVerdict.PASS
    faster = {
        "d0": DeviceTelemetry(
            kpis_before={"fps": KpiReading("fps", 30, 10)},
            kpis_after={"fps": KpiReading("fps", 60, 10)},
        )
    }
    assert evaluate_kpi(relative, outcomes(OK), faster).measured == -100


def test_kpi_with_a_zero_baseline() -> None:
    gate = KpiGate("p95_ms", KpiLimit.MAX_INCREASE_PERCENT, 20, min_devices=1, min_samples=1)
    assert evaluate_kpi(gate, outcomes(OK), {"d0": kpis(0, 0)}).verdict is GateVerdict.PASS
    result = evaluate_kpi(gate, outcomes(OK), {"d0": kpis(0, 5)})
    assert (result.verdict, result.measured) == (GateVerdict.FAIL, None)
    assert "unbounded (baseline 0)" in result.reason


def test_kpi_counts_only_installed_devices_with_enough_samples_before_and_after() -> None:
    gate = KpiGate("p95_ms", KpiLimit.MAX_INCREASE_PERCENT, 20, min_devices=2, min_samples=20)
    telemetry = {
        "d0": kpis(100, 500),
        "d1": kpis(100, 500, samples=19),  # too few samples
        "d2": DeviceTelemetry(kpis_after={"p95_ms": KpiReading("p95_ms", 500, 100)}),  # no baseline
        "d3": kpis(100, 500),  # failed install
    }
    result = evaluate_kpi(gate, outcomes(OK, OK, OK, F), telemetry)
    assert result.verdict is GateVerdict.INSUFFICIENT_DATA  # one device cannot decide
    assert result.devices == 1


# --- all gates ------------------------------------------------------------------------------


def test_evaluate_gates_in_declaration_order() -> None:
    spec = GatesSpec(
        install_failure_rate=InstallFailureGate(10, min_devices=1),
        workload_error_rate=WorkloadErrorGate(1, min_devices=1, min_requests=1),
        kpis=(KpiGate("p95_ms", KpiLimit.MAX_INCREASE_PERCENT, 20, 1, 1),),
    )
    telemetry = {"d0": DeviceTelemetry(workload_requests=10, kpis_before={}, kpis_after={})}
    results = evaluate_gates(spec, outcomes(OK), telemetry)
    assert [r.gate for r in results] == [
        "install_failure_rate",
        "workload_error_rate",
        "kpi:p95_ms",
    ]
    assert [r.verdict for r in results] == [
        GateVerdict.PASS,
        GateVerdict.PASS,
        GateVerdict.INSUFFICIENT_DATA,
    ]
    assert overall_verdict(results) is GateVerdict.INSUFFICIENT_DATA
    assert evaluate_gates(GatesSpec(), outcomes(F), {}) == ()
    assert not GatesSpec().declared and spec.declared


def result(verdict: GateVerdict) -> GateResult:
    return GateResult("g", verdict, None, 0, "%", 0, 0, "")


@given(st.lists(st.sampled_from(list(GateVerdict)), max_size=5))
def test_overall_verdict_fail_beats_insufficient_beats_pass(verdicts: list[GateVerdict]) -> None:
    overall = overall_verdict([result(v) for v in verdicts])
    if GateVerdict.FAIL in verdicts:
        assert overall is GateVerdict.FAIL
    elif GateVerdict.INSUFFICIENT_DATA in verdicts:
        assert overall is GateVerdict.INSUFFICIENT_DATA
    else:
        assert overall is GateVerdict.PASS


@settings(max_examples=100)
@given(
    values=st.lists(st.sampled_from([OK, F, RB, P]), max_size=30),
    max_percent=st.floats(0, 100),
    min_devices=st.integers(1, 5),
)
def test_install_gate_never_decides_below_its_minimum(
    values: list[InstallOutcome], max_percent: float, min_devices: int
) -> None:
    gate = InstallFailureGate(max_percent, min_devices)
    res = evaluate_install_failure_rate(gate, outcomes(*values))
    finished = [v for v in values if v is not P]
    if len(finished) < min_devices:
        assert res.verdict is GateVerdict.INSUFFICIENT_DATA
    else:
        rate = sum(v is not OK for v in finished) * 100 / len(finished)
        assert res.verdict is (GateVerdict.PASS if rate <= max_percent else GateVerdict.FAIL)


# --- manifest form --------------------------------------------------------------------------


def test_parse_gates() -> None:
    spec = parse_gates(
        {
            "install_failure_rate": {"max_percent": 5},
            "workload_error_rate": {"max_percent": 1, "min_requests": 500, "min_devices": 3},
            "kpis": [
                {"kpi": "p95_latency_ms", "max_increase_percent": 20},
                {"kpi": "error_rate_pct", "max_increase": 1, "min_samples": 50},
            ],
            "insufficient_data": {"wait": "30m", "then": "fail"},
        },
        "gates",
    )
    assert spec.install_failure_rate == InstallFailureGate(5, 2)
    assert spec.workload_error_rate == WorkloadErrorGate(1, 3, 500)
    assert spec.kpis == (
        KpiGate("p95_latency_ms", KpiLimit.MAX_INCREASE_PERCENT, 20, 2, 20),
        KpiGate("error_rate_pct", KpiLimit.MAX_INCREASE, 1, 2, 50),
    )
    assert spec.insufficient_data_wait_s == 1800
    assert spec.insufficient_data_action is InsufficientDataAction.FAIL
    defaults = parse_gates({}, "gates")
    assert defaults == GatesSpec()
    assert defaults.insufficient_data_action is InsufficientDataAction.PROMOTE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"install_failure_rate": {"max_percent": 101}}, r"^g\.install_failure_rate\.max_percent"),
        ({"install_failure_rate": {}}, r"^g\.install_failure_rate\.max_percent: expected a number"),
        ({"install_failure_rate": {"max_percent": 1, "min_devices": 0}}, r"min_devices"),
        ({"workload_error_rate": {"max_percent": "1%"}}, r"^g\.workload_error_rate\.max_percent"),
        ({"kpis": [{"kpi": "x"}]}, r"^g\.kpis\[0\]: give exactly one of"),
        (
            {"kpis": [{"kpi": "x", "max_increase": 1, "max_decrease": 1}]},
            r"^g\.kpis\[0\]: give exactly one",
        ),
        ({"kpis": [{"max_increase": 1}]}, r"^g\.kpis\[0\]\.kpi"),
        (
            {"kpis": [{"kpi": "x", "max_increase": 1}, {"kpi": "x", "max_decrease": 1}]},
            r"^g\.kpis\[1\]\.kpi: 'x' already has a gate",
        ),
        ({"kpis": [{"kpi": "x", "max_decrease_percent": 120}]}, r"max_decrease_percent"),
        ({"insufficient_data": {"then": "ignore"}}, r"^g\.insufficient_data\.then: expected"),
        ({"latency": {}}, r"^g\.latency: unknown field"),
    ],
)
def test_parse_gates_errors_name_the_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_gates(data, "g")
