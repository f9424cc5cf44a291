"""Quiet hours learned from a device's own telemetry, and `window: predicted` in rollouts."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.rollouts.actions import MarkDevice, apply_decision
from edgefleet.core.rollouts.decision import decide
from edgefleet.core.rollouts.predicted_window import PredictedWindow, judge_idle
from edgefleet.core.rollouts.rollout import DeviceState, Rollout, RolloutDevice
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.telemetry.quiet_hours import (
    HOURS_PER_WEEK,
    HourSample,
    QuietHours,
    forecast_idle,
    forecast_settled_idle,
    hour_of_week,
    learn_quiet_hours,
    next_idle_start,
)
from edgefleet.errors import InvalidInput

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)
NOW = MONDAY + timedelta(days=21)  # three weeks of history, then a Monday again


def history(
    quiet: range, *, weeks: int = 3, zone_offset_h: int = 0, seed: int = 1
) -> list[HourSample]:
    """Hourly samples: busy (about 5 req/s, 40 % CPU) except in the local `quiet` hours."""
    rng = random.Random(seed)
    out = []
    for h in range(weeks * HOURS_PER_WEEK):
        at = MONDAY + timedelta(hours=h)
        local = (h + zone_offset_h) % 24
        busy = local not in quiet
        out.append(
            HourSample(
                at,
                requests_per_s=(5.0 if busy else 0.2) * rng.uniform(0.9, 1.1),
                cpu_percent=(40.0 if busy else 8.0) * rng.uniform(0.9, 1.1),
            )
        )
    return out


def test_learns_the_quiet_hours_of_the_device_in_its_own_zone() -> None:
    profile = learn_quiet_hours(history(range(1, 5), zone_offset_h=9), NOW, "Asia/Tokyo")
    for utc_hour, idle in ((17, True), (19, True), (20, False), (3, False), (12, False)):
        f = forecast_idle(profile, NOW.replace(hour=utc_hour))
        assert f.idle is idle, (utc_hour, f)
        assert f.confidence > 0.5
    assert "usually idle now" in forecast_idle(profile, NOW.replace(hour=17)).reason


def test_predictions_follow_the_data() -> None:
    """Two devices with opposite habits get opposite forecasts: the model reads the data."""
    night = learn_quiet_hours(history(range(0, 6)), NOW, "UTC")
    day = learn_quiet_hours(history(range(12, 18)), NOW, "UTC")
    at_3, at_15 = NOW.replace(hour=3), NOW.replace(hour=15)
    assert forecast_idle(night, at_3).idle and not forecast_idle(night, at_15).idle
    assert forecast_idle(day, at_15).idle and not forecast_idle(day, at_3).idle
    # The first quiet hour is skipped (it may begin busy): the next settled one is the second.
    assert next_idle_start(night, NOW.replace(hour=10), 86400) == NOW + timedelta(days=1, hours=1)
    assert next_idle_start(day, NOW.replace(hour=10), 86400) == NOW.replace(hour=13)


def test_recent_weeks_weigh_more_so_a_changed_habit_is_learned() -> None:
    old = history(range(0, 6), weeks=3)
    new = [replace(s, hour=s.hour + timedelta(weeks=3)) for s in history(range(12, 18), weeks=2)]
    profile = learn_quiet_hours(old + new, NOW + timedelta(weeks=2), "UTC", half_life_s=3 * 86400)
    later = NOW + timedelta(weeks=2)
    assert forecast_idle(profile, later.replace(hour=14)).idle
    assert not forecast_idle(profile, later.replace(hour=3)).idle


def test_no_data_means_no_prediction_and_flat_devices_have_no_quiet_pattern() -> None:
    empty = learn_quiet_hours([], NOW, "UTC")
    assert not empty.known
    assert forecast_idle(empty, NOW).confidence == 0.0
    flat = learn_quiet_hours(
        [HourSample(MONDAY + timedelta(hours=h), requests_per_s=3.0) for h in range(500)],
        NOW,
        "UTC",
    )
    f = forecast_idle(flat, NOW)
    assert f.idle and "no quiet pattern" in f.reason


def test_an_erratic_device_has_no_quiet_pattern_and_is_never_held() -> None:
    rng = random.Random(7)
    weeks = 8
    samples = [
        HourSample(MONDAY + timedelta(hours=h), requests_per_s=rng.choice([0.1, 5.0]))
        for h in range(weeks * HOURS_PER_WEEK)
    ]
    end = MONDAY + timedelta(weeks=weeks)
    erratic = learn_quiet_hours(samples, end, "UTC")
    steady = learn_quiet_hours(history(range(0, 6), weeks=weeks), end, "UTC")
    hours = [end + timedelta(hours=h) for h in range(HOURS_PER_WEEK)]
    assert all("no quiet pattern" in forecast_idle(erratic, t).reason for t in hours)
    assert all(judge_idle(PredictedWindow(), erratic, t).install for t in hours[:24])
    assert min(forecast_idle(steady, t).confidence for t in hours) > 0.5
    assert sum(not judge_idle(PredictedWindow(), steady, t).install for t in hours[:24]) == 19


def test_the_first_hour_of_a_quiet_period_is_skipped() -> None:
    profile = learn_quiet_hours(history(range(0, 6)), NOW, "UTC")
    assert forecast_idle(profile, NOW).idle
    settled = forecast_settled_idle(profile, NOW)
    assert not settled.idle and "the quiet period begins this hour" in settled.reason
    assert forecast_settled_idle(profile, NOW.replace(hour=1)).idle


def test_samples_after_now_are_ignored_and_zones_are_checked() -> None:
    future = [HourSample(NOW + timedelta(hours=1), requests_per_s=1.0)]
    assert not learn_quiet_hours(future, NOW, "UTC").known
    with pytest.raises(InvalidInput, match="unknown time zone"):
        learn_quiet_hours([], NOW, "Mars/Base")
    with pytest.raises(InvalidInput, match="no time zone"):
        hour_of_week(datetime(2026, 1, 1), "UTC")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4 * HOURS_PER_WEEK), st.floats(0, 100), st.floats(0, 100)),
        max_size=60,
    )
)
def test_profiles_stay_in_range_and_are_order_independent(
    rows: list[tuple[int, float, float]],
) -> None:
    samples = [HourSample(MONDAY + timedelta(hours=h), r, c) for h, r, c in rows]
    end = MONDAY + timedelta(weeks=4)
    a = learn_quiet_hours(samples, end, "Europe/Berlin")
    b = learn_quiet_hours(list(reversed(samples)), end, "Europe/Berlin")
    assert a.activity == pytest.approx(b.activity) and a.evidence == pytest.approx(b.evidence)
    assert all(0.0 <= x <= 1.0 + 1e-9 for x in a.activity)
    f = forecast_idle(a, end)
    assert 0.0 <= f.confidence <= 1.0


# --- window: predicted ----------------------------------------------------------------------


def test_spec_window_predicted_forms_and_errors() -> None:
    spec = parse_rollout_spec({"release": "det@2.0.0", "window": "predicted"})
    assert spec.predicted_window == PredictedWindow()
    spec = parse_rollout_spec(
        {"release": "det@2.0.0", "window": {"mode": "predicted", "max_wait": "6h",
                                            "min_confidence": 0.7}}
    )  # fmt: skip
    assert spec.predicted_window == PredictedWindow(6 * 3600.0, 0.7)
    assert parse_rollout_spec({"release": "det@2.0.0"}).predicted_window is None
    for window, message in (
        ("sometimes", "spec.window: expected one of static, predicted"),
        ({"mode": "predicted", "max_wait": "9d"}, "spec.window.max_wait"),
        ({"mode": "predicted", "min_confidence": 2}, "spec.window.min_confidence"),
        ({"mode": "static", "max_wait": "1h"}, "need mode: predicted"),
        ({"mode": "predicted", "maxwait": "1h"}, "spec.window.maxwait"),
    ):
        with pytest.raises(InvalidInput, match=message):
            parse_rollout_spec({"kind": "Rollout", "metadata": {"name": "r"},
                                "spec": {"release": "det@2.0.0", "window": window}})  # fmt: skip


def _rollout(window: object) -> Rollout:
    doc = {"release": "det@2.0.0", "strategy": {"waves": ["100%"], "max_unavailable": "100%"},
           "window": window}  # fmt: skip
    return Rollout("ro-1", parse_rollout_spec(doc))


def test_a_predicted_window_installs_each_device_in_its_own_quiet_hours() -> None:
    night = learn_quiet_hours(history(range(0, 6)), NOW, "UTC")
    evening = learn_quiet_hours(history(range(18, 23)), NOW, "UTC")
    devices = {
        "night": RolloutDevice("night", quiet_hours=night),
        "evening": RolloutDevice("evening", quiet_hours=evening),
        "new": RolloutDevice("new"),  # no telemetry: not held
    }
    rollout, now = _rollout({"mode": "predicted", "max_wait": "24h"}), NOW.replace(hour=10)
    installed_at: dict[str, datetime] = {}
    for _ in range(30):
        decision = decide(rollout, devices, {}, now)
        for a in decision.assignments:
            installed_at.setdefault(a.device_id, now)
        rollout, devices = apply_decision(rollout, devices, decision)
        if now == NOW.replace(hour=10):
            held = {a.device_id: a.reason for a in decision.actions if isinstance(a, MarkDevice)}
            assert held["evening"].startswith(
                "waiting for its predicted idle time at 2026-03-23 19:00"
            )
        now += timedelta(hours=1)
    assert installed_at == {
        "new": NOW.replace(hour=10),
        "evening": NOW.replace(hour=19),
        "night": NOW + timedelta(days=1, hours=1),
    }


def test_the_bound_installs_a_device_with_no_idle_hour_within_max_wait() -> None:
    night = learn_quiet_hours(history(range(0, 6)), NOW, "UTC")
    window = PredictedWindow(max_wait_s=4 * 3600)
    verdict = judge_idle(window, night, NOW.replace(hour=10))
    assert verdict.install and "within 4h, installing now" in verdict.reason
    held = judge_idle(window, night, NOW.replace(hour=21))
    assert not held.install and held.held_until == NOW + timedelta(days=1, hours=1)
    distrusted = judge_idle(PredictedWindow(min_confidence=0.99), night, NOW.replace(hour=3))
    assert distrusted.install  # confident enough nowhere: never held for nothing


def test_a_force_deadline_ends_a_predicted_hold() -> None:
    night = learn_quiet_hours(history(range(0, 6)), NOW, "UTC")
    doc = {"release": "det@2.0.0", "strategy": {"waves": ["100%"]}, "window": "predicted",
           "deadline": {"after": "1h", "action": "force"}}  # fmt: skip
    rollout = Rollout("ro-1", parse_rollout_spec(doc))
    devices = {"d": RolloutDevice("d", quiet_hours=night)}
    rollout_without_deadline = _rollout("predicted")
    held = apply_decision(
        rollout_without_deadline,
        devices,
        decide(rollout_without_deadline, devices, {}, NOW.replace(hour=14)),
    )
    assert decide(*held, {}, NOW.replace(hour=14)).next_check_at == NOW + timedelta(days=1, hours=1)
    now = NOW.replace(hour=14)
    decision = decide(rollout, devices, {}, now)
    assert decision.next_check_at == now + timedelta(hours=1)  # the deadline
    rollout, devices = apply_decision(rollout, devices, decision)
    assert devices["d"].state is DeviceState.OUTSIDE_WINDOW
    assert decide(rollout, devices, {}, now).next_check_at == now + timedelta(hours=1)
    later = decide(rollout, devices, {}, now + timedelta(hours=2))
    assert [a.device_id for a in later.assignments] == ["d"]


def test_profile_shape_is_checked() -> None:
    with pytest.raises(InvalidInput):
        QuietHours("UTC", (0.0,), (0.0,), (0.0,), NOW)
