from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from edgefleet.core.rollouts.gates import InstallFailureGate, KpiLimit
from edgefleet.core.rollouts.spec import (
    DEFAULT_SOAK_S,
    DeadlineAction,
    FailureAction,
    ReleaseRef,
    RolloutSpec,
    parse_rollout_spec,
)
from edgefleet.core.selector import parse_selector
from edgefleet.errors import InvalidInput, SelectorSyntaxError

MANIFEST = """
kind: Rollout
apiVersion: edgefleet/v1
metadata: {name: detector-2-1}
spec:
  release: detector@2.1.0
  target: "kind=camera,region=eu"
  description: new detector for EU cameras
  strategy:
    waves: [1, "5%", {size: "25%", soak: 2h}, "100%"]
    soak: 30m
    max_unavailable: "10%"
    devices_per_minute: 20
    install_timeout: 45m
  gates:
    install_failure_rate: {max_percent: 5}
    workload_error_rate: {max_percent: 1, min_requests: 500}
    kpis:
      - {kpi: p95_latency_ms, max_increase_percent: 20}
      - {kpi: error_rate_pct, max_increase: 1, min_devices: 3, min_samples: 50}
    insufficient_data: {wait: 30m, then: promote}
  on_failure: pause
  maintenance_windows:
    - {cron: "0 2 * * *", duration: 4h, time_zone: device}
    - {cron: "0 12 * * sat", duration: 2h, time_zone: Europe/Berlin}
  deadline: {at: 2026-07-01T00:00:00Z, action: force}
  retries: {max_attempts: 4, backoff: {initial: 2m, max: 1h}}
"""


def test_full_manifest() -> None:
    spec = parse_rollout_spec(yaml.safe_load(MANIFEST))
    assert spec.name == "detector-2-1"
    assert spec.release == ReleaseRef("detector", "2.1.0")
    assert str(spec.release) == "detector@2.1.0"
    assert spec.target == parse_selector("kind=camera,region=eu")
    assert spec.description == "new detector for EU cameras"
    strategy = spec.strategy
    assert [str(w.size) for w in strategy.waves] == ["1", "5%", "25%", "100%"]
    assert [w.soak_s for w in strategy.waves] == [None, None, 7200, None]
    assert strategy.soak_s == 1800
    assert strategy.max_unavailable_of(200) == 20
    assert strategy.max_unavailable_of(3) == 1
    assert strategy.devices_per_minute == 20
    assert strategy.install_timeout_s == 2700
    assert spec.gates.install_failure_rate == InstallFailureGate(5, 2)
    assert [k.limit for k in spec.gates.kpis] == [
        KpiLimit.MAX_INCREASE_PERCENT,
        KpiLimit.MAX_INCREASE,
    ]
    assert spec.on_failure is FailureAction.PAUSE
    assert [w.time_zone for w in spec.maintenance_windows] == ["device", "Europe/Berlin"]
    assert spec.maintenance_windows[0].duration_s == 4 * 3600
    assert spec.deadline is not None
    assert spec.deadline.action is DeadlineAction.FORCE
    assert spec.deadline.at == datetime(2026, 7, 1, tzinfo=UTC)
    assert (spec.retries.max_attempts, spec.retries.backoff_initial_s) == (4, 120)
    assert spec.retries.backoff_max_s == 3600


def test_flat_form_and_defaults() -> None:
    spec = parse_rollout_spec({"kind": "Rollout", "name": "r1", "release": "det@1.0.0"})
    assert spec == RolloutSpec(release=ReleaseRef("det", "1.0.0"), name="r1")
    assert spec.target.matches({"anything": "x"})  # empty selector: every device
    assert [str(w.size) for w in spec.strategy.waves] == ["1", "10%", "50%", "100%"]
    assert spec.strategy.soak_s == DEFAULT_SOAK_S
    assert spec.strategy.devices_per_minute is None
    assert spec.on_failure is FailureAction.ROLLBACK
    assert not spec.gates.declared
    assert spec.maintenance_windows == ()
    assert spec.deadline is None
    assert spec.retries.max_attempts == 3


def test_deadline_after_a_duration() -> None:
    spec = parse_rollout_spec({"release": "a@1", "deadline": {"after": "72h"}})
    assert spec.deadline is not None
    assert spec.deadline.action is DeadlineAction.FAIL
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert spec.deadline.resolve(start) == start + timedelta(hours=72)
    at = parse_rollout_spec(
        {"release": "a@1", "deadline": {"at": "2026-07-01T02:00:00+02:00", "action": "fail"}}
    ).deadline
    assert at is not None and at.resolve(start) == datetime(2026, 7, 1, tzinfo=UTC)


def test_durations_as_seconds() -> None:
    spec = parse_rollout_spec({"release": "a@1", "strategy": {"soak": 90, "waves": ["100%"]}})
    assert spec.strategy.soak_s == 90


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kind": "Workload", "release": "a@1"}, r"^kind: expected 'Rollout'"),
        ({}, r"^release: required"),
        ({"release": "a"}, r"^release: invalid release 'a': expected name@version"),
        ({"release": "a@"}, r"^release: invalid release"),
        ({"release": "A B@1"}, r"^release: invalid release"),
        ({"release": "a@1", "name": "Bad_Name"}, r"^name: invalid rollout name"),
        ({"release": "a@1", "rollout": 1}, r"^rollout: unknown field"),
        ({"release": "a@1", "target": "region in eu"}, r"^target: invalid selector"),
        ({"release": "a@1", "target": 5}, r"^target: expected a label selector"),
        ({"release": "a@1", "strategy": {"waves": []}}, r"^strategy\.waves: expected 1 to 100"),
        (
            {"release": "a@1", "strategy": {"waves": [1, "5%", "5%"]}},
            r"^strategy\.waves\[2\]: 5% does not grow past wave 1 \(5%\)",
        ),
        (
            {"release": "a@1", "strategy": {"waves": [2, "5%", 2]}},
            r"^strategy\.waves\[2\]: 2 does not grow past wave 0",
        ),
        ({"release": "a@1", "strategy": {"waves": [1, "150%"]}}, r"^strategy\.waves\[1\]: "),
        ({"release": "a@1", "strategy": {"waves": [0]}}, r"^strategy\.waves\[0\]: "),
        ({"release": "a@1", "strategy": {"waves": [{"soak": "1h"}]}}, r"waves\[0\]\.size: req"),
        (
            {"release": "a@1", "strategy": {"waves": [{"size": 1, "soak": "1y"}]}},
            r"^strategy\.waves\[0\]\.soak: invalid duration",
        ),
        ({"release": "a@1", "strategy": {"soak": -1}}, r"^strategy\.soak: duration -1 must"),
        ({"release": "a@1", "strategy": {"max_unavailable": "0%"}}, r"strategy\.max_unavailable"),
        ({"release": "a@1", "strategy": {"devices_per_minute": 0}}, r"devices_per_minute"),
        ({"release": "a@1", "strategy": {"devices_per_minute": True}}, r"devices_per_minute"),
        ({"release": "a@1", "strategy": {"install_timeout": 0}}, r"install_timeout"),
        ({"release": "a@1", "strategy": {"wave": [1]}}, r"^strategy\.wave: unknown field"),
        ({"release": "a@1", "gates": {"kpis": [{"kpi": "x"}]}}, r"^gates\.kpis\[0\]"),
        ({"release": "a@1", "on_failure": "panic"}, r"^on_failure: expected pause\|rollback"),
        (
            {
                "release": "a@1",
                "maintenance_windows": [
                    {"cron": "0 2 * * *", "duration": "1h", "time_zone": "Nowhere/City"}
                ],
            },
            r"^maintenance_windows\[0\]\.time_zone: unknown time zone",
        ),
        (
            {"release": "a@1", "maintenance_windows": [{"cron": "0 25 * * *", "duration": 60}]},
            r"^maintenance_windows\[0\]\.cron: invalid cron",
        ),
        ({"release": "a@1", "maintenance_windows": {}}, r"^maintenance_windows: expected a list"),
        ({"release": "a@1", "deadline": {"action": "force"}}, r"^deadline: give exactly one"),
        (
            {"release": "a@1", "deadline": {"at": "2026-07-01T00:00:00"}},
            r"^deadline\.at: expected a time with a zone",
        ),
        ({"release": "a@1", "deadline": {"at": "soon"}}, r"^deadline\.at: expected an ISO 8601"),
        ({"release": "a@1", "deadline": {"after": "1h", "action": "x"}}, r"^deadline\.action"),
        ({"release": "a@1", "retries": {"max_attempts": 0}}, r"^retries\.max_attempts"),
        (
            {"release": "a@1", "retries": {"backoff": {"initial": "1h", "max": "1m"}}},
            r"^retries\.backoff\.max: must be at least",
        ),
        ({"release": "a@1", "description": 3}, r"^description: expected a string"),
        ([1, 2], r"^document: expected a mapping"),
    ],
)
def test_errors_name_the_field(doc: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_rollout_spec(doc)


def test_errors_in_the_kubernetes_shape_carry_the_spec_prefix() -> None:
    doc = {
        "kind": "Rollout",
        "metadata": {"name": "x"},
        "spec": {"release": "a@1", "strategy": {"waves": [1, 1]}},
    }
    with pytest.raises(InvalidInput, match=r"^spec\.strategy\.waves\[1\]: "):
        parse_rollout_spec(doc)
    with pytest.raises(InvalidInput, match=r"^metadata\.labels: unknown field"):
        parse_rollout_spec({"metadata": {"labels": {}}, "spec": {"release": "a@1"}})


def test_a_bad_target_stays_a_selector_error() -> None:
    with pytest.raises(SelectorSyntaxError):
        parse_rollout_spec({"release": "a@1", "target": "tier in (a"})


def test_backoff_max_defaults_to_at_least_initial() -> None:
    spec = parse_rollout_spec({"release": "a@1", "retries": {"backoff": {"initial": "2h"}}})
    assert spec.retries.backoff_max_s == 7200
