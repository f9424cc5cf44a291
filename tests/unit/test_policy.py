"""Policies as code (`core/policy.py`) and four-eyes approval (`core/approval.py`): each
rule refuses exactly what it says, and names the policy, the rule and why."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.governance.approval import Requester, decide_approver
from edgefleet.core.governance.policy import (
    Policy,
    approval_reasons,
    check_labels,
    check_release,
    check_rollout,
    check_workload,
    parse_policy,
    trust_change_needs_approval,
    wave_increments,
)
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.workloads.workload import parse_workload
from edgefleet.errors import InvalidInput

NOW = datetime(2026, 12, 7, 5, 30, tzinfo=UTC)


def policy(**spec: Any) -> Policy:
    return parse_policy({"kind": "Policy", "metadata": {"name": "prod"}, "spec": spec})


def fleet(count: int, **labels: str) -> dict[str, dict[str, str]]:
    return {f"cam-{i}": {"kind": "camera", **labels} for i in range(count)}


@given(st.lists(st.integers(1, 100), min_size=1, max_size=4, unique=True), st.booleans(),
       st.integers(0, 500))  # fmt: skip
def test_waves_add_every_device_once(shares: list[int], canary: bool, total: int) -> None:
    waves: list[object] = [f"{share}%" for share in sorted(shares)]
    spec = parse_rollout_spec(
        {"release": "vision@1.0.0", "strategy": {"waves": [1, *waves] if canary else waves}}
    )
    sizes = wave_increments(spec, total)
    assert sum(sizes) == total
    assert all(size >= 1 for size in sizes)


def test_a_wave_larger_than_allowed_is_refused_with_its_size() -> None:
    spec = parse_rollout_spec({"release": "vision@1.0.0", "strategy": {"waves": [1, "100%"]}})
    [violation] = check_rollout([policy(max_wave_size=10)], spec, fleet(30), NOW)
    assert (violation.policy, violation.rule) == ("prod", "max_wave_size")
    assert "a wave would update 29 devices at once; the most allowed is 10" in violation.reason
    small = parse_rollout_spec({"release": "vision@1.0.0",
                                "strategy": {"waves": [1, 10, 20, "100%"]}})  # fmt: skip
    assert check_rollout([policy(max_wave_size=10)], small, fleet(30), NOW) == []


def test_maintenance_windows_are_required_where_the_policy_says() -> None:
    rule = policy(maintenance=[{"devices": "env=prod"}])
    spec = parse_rollout_spec({"release": "vision@1.0.0"})
    [violation] = check_rollout([rule], spec, {"cam-1": {"env": "prod"}, "cam-2": {}}, NOW)
    assert violation.reason == (
        "the rollout reaches cam-1, matching 'env=prod', and declares no maintenance window"
    )
    assert check_rollout([rule], spec, {"cam-2": {"env": "dev"}}, NOW) == []


NIGHT = {"cron": "0 1 * * *", "duration": "5h"}  # 01:00-06:00, device time


def windows(*items: dict[str, str]) -> Any:
    return parse_rollout_spec({"release": "vision@1.0.0", "maintenance_windows": list(items)})


def test_declared_windows_must_lie_inside_the_allowed_ones() -> None:
    rule = policy(maintenance=[{"devices": "env=prod", "allowed": [NIGHT]}])
    prod = {"cam-1": {"env": "prod"}}
    assert check_rollout([rule], windows({"cron": "0 2 * * *", "duration": "2h"}), prod, NOW) == []
    [late] = check_rollout([rule], windows({"cron": "0 5 * * *", "duration": "2h"}), prod, NOW)
    assert (late.policy, late.rule) == ("prod", "maintenance")
    assert "opens at 2026-12-08 05:00 UTC outside the allowed windows" in late.reason
    # Only on Sundays at noon: the first Sunday is named.
    [sunday] = check_rollout([rule], windows({"cron": "0 12 * * sun", "duration": "1h"}), prod,
                             NOW)  # fmt: skip
    assert "opens at 2026-12-13 12:00 UTC" in sunday.reason
    # Devices the rule does not cover may be updated in any window.
    assert check_rollout([rule], windows({"cron": "0 12 * * *", "duration": "1h"}),
                         {"cam-2": {"env": "dev"}}, NOW) == []  # fmt: skip


def test_allowed_windows_back_to_back_hold_a_window_across_them() -> None:
    evening = {"cron": "0 22 * * *", "duration": "3h"}  # 22:00-01:00, then NIGHT to 06:00
    rule = policy(maintenance=[{"devices": "env=prod", "allowed": [evening, NIGHT]}])
    across = windows({"cron": "0 23 * * *", "duration": "4h"})  # 23:00-03:00
    assert check_rollout([rule], across, {"cam-1": {"env": "prod"}}, NOW) == []
    gap = policy(maintenance=[{"devices": "env=prod", "allowed": [NIGHT]}])
    [violation] = check_rollout([gap], across, {"cam-1": {"env": "prod"}}, NOW)
    assert "opens at 2026-12-07 23:00 UTC" in violation.reason


def test_an_allowed_window_is_checked_like_a_declared_one() -> None:
    with pytest.raises(InvalidInput, match=r"spec.maintenance\[0\].allowed\[0\].duration"):
        policy(maintenance=[{"devices": "env=prod", "allowed": [{"cron": "0 1 * * *"}]}])


def test_release_channels_need_their_signatures() -> None:
    rule = policy(releases=[{"match": "prod-*", "min_signatures": 2}])
    [violation] = check_release([rule], "prod-vision", 1)
    assert str(violation) == (
        "policy prod, rule releases: release prod-vision matches 'prod-*', which needs 2 "
        "signatures; it has 1"
    )
    assert check_release([rule], "prod-vision", 2) == []
    assert check_release([rule], "dev-vision", 1) == []


@given(st.dictionaries(st.sampled_from(["env", "canary", "tier"]),
                       st.sampled_from(["prod", "true", "dev"])))  # fmt: skip
def test_forbidden_combinations_refuse_exactly_the_labels_that_carry_them(
    labels: dict[str, str],
) -> None:
    rule = policy(forbidden_labels=[["env=prod", "canary=true"]])
    carries = labels.get("env") == "prod" and labels.get("canary") == "true"
    assert bool(check_labels([rule], "cam-1", labels)) == carries


def test_workloads_reaching_resident_devices_must_stay_in_the_allowed_zones() -> None:
    rule = policy(residency=[{"devices": "region=eu", "allowed": ["eu"]}])

    def workload(residency: list[str]) -> Any:
        return parse_workload({
            "kind": "Workload", "metadata": {"name": "billing"},
            "spec": {"artifacts": ["svc@1.0.0"], "constraints": {"residency": residency},
                     "resources": {"cpu_millicores": 100, "memory_mb": 64}},
        })  # fmt: skip

    eu = {"gw-1": {"region": "eu"}}
    [violation] = check_workload([rule], workload([]), eu)
    assert "its constraints.residency must be within eu; it declares none" in violation.reason
    assert check_workload([rule], workload(["us"]), eu)
    assert check_workload([rule], workload(["eu"]), eu) == []
    assert check_workload([rule], workload([]), {"gw-2": {"region": "us"}}) == []


def test_approval_is_needed_for_large_protected_or_unpaused_rollouts() -> None:
    rule = policy(approval={"min_devices": 3, "protected": ["tier=critical"],
                            "unless_on_failure_pause": True})  # fmt: skip
    paused = parse_rollout_spec({"release": "vision@1.0.0", "on_failure": "pause"})
    assert approval_reasons([rule], paused, fleet(2)) == []
    assert approval_reasons([rule], paused, fleet(3)) == [
        "policy prod: it reaches 3 devices (approval from 3)"
    ]
    assert approval_reasons([rule], paused, {"db-1": {"tier": "critical"}}) == [
        "policy prod: it reaches protected devices 'tier=critical' (db-1)"
    ]
    rolling_back = parse_rollout_spec({"release": "vision@1.0.0"})
    assert approval_reasons([rule], rolling_back, {}) == [
        "policy prod: on_failure is rollback, not pause"
    ]


def test_trust_changes_wait_only_under_a_policy_that_says_so() -> None:
    assert trust_change_needs_approval([policy(approval={"trust_changes": True})]) == ["prod"]
    assert trust_change_needs_approval([policy()]) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"max_wave_size": 0}, "spec.max_wave_size: expected an integer in 1.."),
        ({"approval": {"protected": ["tier in"]}}, "spec.approval.protected[0]: "),
        ({"forbidden_labels": [["env=prod"]]}, "spec.forbidden_labels[0]: expected at least two"),
        ({"releases": [{"match": "prod-*"}]}, "spec.releases[0].min_signatures: expected"),
        ({"residency": [{"devices": "region=eu", "allowed": []}]}, "spec.residency[0].allowed"),
        ({"approval": {"trust_changes": "yes"}}, "spec.approval.trust_changes: expected true"),
        ({"quota": 1}, "spec.quota: unknown field"),
    ],
)
def test_bad_policies_are_refused_naming_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        policy(**spec)
    assert message in refused.value.message


def test_the_requester_cannot_approve_their_own_change() -> None:
    alice = Requester.from_actor("alice (tok-1)")
    assert decide_approver(alice, Requester("tok-2", "bob")).allowed
    refused = decide_approver(alice, Requester("tok-1", "alice"))
    assert refused.reason == (
        "alice requested this change and cannot approve it too: a second operator must"
    )
    # Another token of the same name is the same person.
    assert not decide_approver(alice, Requester("tok-9", "alice")).allowed
    assert Requester.from_actor("system") == Requester("system", "system")
    # Nor is alice's dashboard session (a token named ui:alice).
    assert not decide_approver(alice, Requester("tok-7", "ui:alice")).allowed
    assert not decide_approver(Requester.from_actor("ui:alice (tok-7)"), alice).allowed
