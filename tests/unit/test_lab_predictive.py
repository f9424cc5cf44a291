"""Device habits in the simulator (`sim/activity.py`) and the lab's predictive evaluation
(`sim/lab/predictive.py`, `predictive_report.py`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.core.telemetry.quiet_hours import forecast_idle, learn_quiet_hours
from edgefleet.errors import InvalidInput
from edgefleet.sim.activity import DailyActivity, DeviceActivity, parse_activity
from edgefleet.sim.lab.fleet_model import lab_fleet_from_profile
from edgefleet.sim.lab.predictive import (
    PredictiveConfig,
    evaluate_windows,
    hourly_samples,
    run_predictive,
)
from edgefleet.sim.lab.predictive_report import render_markdown, verdicts
from edgefleet.sim.profile import load_profile

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)


def test_activity_sections_are_checked_and_shipped_profiles_have_them() -> None:
    shop = parse_activity({"busy": [8, 21], "quiet_level": 0.1}, "spec.classes[0].activity")
    assert (shop.busy_from_h, shop.busy_until_h, shop.quiet_level) == (8.0, 21.0, 0.1)
    for raw, field in (
        ({"busy": [8]}, "busy"),
        ({"quiet_level": 2}, "quiet_level"),
        ({"busy": [8, 21], "sometimes": 1}, "sometimes"),
    ):
        with pytest.raises(InvalidInput, match=f"spec.classes\\[0\\].activity.{field}"):
            parse_activity(raw, "spec.classes[0].activity")
    for name in ("retail-cameras", "factory-gateways", "battery-sensors"):
        assert all(c.activity.quiet_level < 1 for c in load_profile(name).classes)


def test_a_device_is_busy_in_its_own_local_hours() -> None:
    shop = DailyActivity(8, 21, quiet_level=0.1, always_on_percent=0)
    paris = DeviceActivity(shop, "Europe/Paris", seed=1)
    tokyo = DeviceActivity(shop, "Asia/Tokyo", seed=1)
    noon_utc = MONDAY.replace(hour=12)  # 13:00 in Paris, 21:00 in Tokyo
    assert paris.level(noon_utc) == 1.0 and tokyo.level(noon_utc) == pytest.approx(0.1)
    night = DailyActivity(20, 6, quiet_level=0.0, always_on_percent=0)  # wraps midnight
    assert DeviceActivity(night, "UTC", 1).level(MONDAY.replace(hour=2)) == 1.0
    assert DeviceActivity(DailyActivity(), "UTC", 1).level(MONDAY.replace(hour=3)) == 1.0


def test_the_lab_learns_each_device_s_own_quiet_hours() -> None:
    profile = load_profile("retail-cameras")
    device = next(
        d for d in lab_fleet_from_profile(profile, 20, 11) if "Europe" in str(d.time_zone)
    )
    class_activity = next(c.activity for c in profile.classes if c.name == device.device_class)
    activity = DeviceActivity(replace(class_activity, always_on_percent=0), device.time_zone, 5)
    start = MONDAY + timedelta(days=21)
    samples = hourly_samples(activity, device, MONDAY, 21 * 24)
    learned = learn_quiet_hours(samples, start, str(device.time_zone))
    assert forecast_idle(learned, start.replace(hour=2)).idle  # 03:00 in Europe: closed
    assert not forecast_idle(learned, start.replace(hour=12)).idle  # 13:00: open


def test_the_evaluation_is_deterministic_and_predicted_beats_installing_at_once() -> None:
    config = PredictiveConfig(load_profile("retail-cameras"), devices=12, rollout_starts=4,
                              evacuations=4, fidelity_devices=6, incident_percent=50)  # fmt: skip
    first, again = run_predictive(config), run_predictive(config)
    assert first == again
    windows = first["update_windows"]["policies"]
    assert (windows["predicted"]["requests_disrupted_per_1000_installs"]
            < windows["immediate"]["requests_disrupted_per_1000_installs"])  # fmt: skip
    assert windows["predicted"]["wait_h_median"] < windows["static"]["wait_h_median"]
    assert set(verdicts([first])) == {
        "window: predicted", "migration forecast (trend)", "migration forecast (seasonal)",
        "telemetry fidelity",
    }  # fmt: skip
    markdown = render_markdown([first])
    assert "| retail-cameras | 11 | predicted |" in markdown


def test_predictions_ignoring_the_data_would_show() -> None:
    """A fleet that is busy around the clock gives the predicted window nothing to find: it
    installs at once, exactly like the no-window policy."""
    profile = load_profile("retail-cameras")
    flat = replace(profile, classes=tuple(replace(c, activity=DailyActivity())
                                          for c in profile.classes))  # fmt: skip
    config = PredictiveConfig(flat, devices=6, rollout_starts=3)
    fleet = lab_fleet_from_profile(flat, 6, 11)
    policies = evaluate_windows(config, fleet)["policies"]
    assert policies["predicted"]["wait_h_p95"] == 0.0
    assert (policies["predicted"]["requests_disrupted_per_1000_installs"]
            == policies["immediate"]["requests_disrupted_per_1000_installs"])  # fmt: skip
