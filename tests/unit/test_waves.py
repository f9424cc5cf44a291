from __future__ import annotations

import hashlib
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.rollouts.waves import (
    Quantity,
    Wave,
    WavePlan,
    WaveSpec,
    device_rank,
    plan_waves,
    resolve_wave_sizes,
)
from edgefleet.errors import InvalidInput


def specs(*sizes: int | str) -> list[WaveSpec]:
    return [WaveSpec(Quantity.parse(s)) for s in sizes]


def fleet(n: int) -> list[str]:
    return [f"dev-{i:04d}" for i in range(n)]


def test_quantity_parsing() -> None:
    assert Quantity.parse(3) == Quantity(Fraction(3), percent=False)
    assert Quantity.parse(" 12 ") == Quantity(Fraction(12), percent=False)
    assert Quantity.parse("5%") == Quantity(Fraction(5), percent=True)
    assert Quantity.parse("0.5%") == Quantity(Fraction(1, 2), percent=True)
    assert [str(Quantity.parse(v)) for v in (3, "5%", "0.5%", "100%")] == [
        "3",
        "5%",
        "0.5%",
        "100%",
    ]


@pytest.mark.parametrize("value", [0, -1, "0", "0%", "101%", "x%", "abc", True, 1.5, None, ""])
def test_quantity_refuses(value: object) -> None:
    with pytest.raises(InvalidInput):
        Quantity.parse(value)


def test_percentages_round_up_and_counts_are_clamped() -> None:
    assert Quantity.parse("5%").resolve(10) == 1  # 0.5 rounds up
    assert Quantity.parse("10%").resolve(10) == 1
    assert Quantity.parse("25%").resolve(10) == 3  # 2.5 rounds up
    assert Quantity.parse("0.1%").resolve(999) == 1
    assert Quantity.parse("100%").resolve(7) == 7
    assert Quantity.parse(50).resolve(7) == 7


def test_issue_example_on_a_hundred_devices() -> None:
    plan = plan_waves("r", fleet(100), specs(1, "5%", "25%", "100%"), default_soak_s=600)
    assert [w.size for w in plan.waves] == [1, 4, 20, 75]
    assert [w.label for w in plan.waves] == ["1", "5%", "25%", "100%"]
    assert plan.cumulative_size(2) == 25


def test_canary_has_at_least_one_device_when_the_target_is_not_empty() -> None:
    assert resolve_wave_sizes(specs("1%", "100%"), 3) == (1, 3)
    assert resolve_wave_sizes(specs("1%", "100%"), 0) == (0, 0)
    assert plan_waves("r", [], specs(1, "100%"), 60).waves == ()


def test_waves_that_add_nobody_are_left_out_and_a_short_plan_gets_a_rest_wave() -> None:
    plan = plan_waves("r", fleet(10), specs(1, "5%", "50%"), default_soak_s=60)
    # "5%" of 10 is 1 device, already covered by the canary.
    assert [(w.label, w.size) for w in plan.waves] == [("1", 1), ("50%", 4), ("rest", 5)]
    assert [w.index for w in plan.waves] == [0, 1, 2]


def test_a_wave_has_its_own_soak_or_the_default() -> None:
    waves = [WaveSpec(Quantity.parse(1), soak_s=3600), WaveSpec(Quantity.parse("100%"))]
    plan = plan_waves("r", fleet(5), waves, default_soak_s=60)
    assert [w.soak_s for w in plan.waves] == [3600, 60]


def test_counts_and_percentages_mix_cumulatively() -> None:
    assert resolve_wave_sizes(specs(2, "10%", 30, "100%"), 100) == (2, 10, 30, 100)
    assert resolve_wave_sizes(specs("50%", 10), 100) == (50, 50)  # never shrinks


def test_membership_is_a_stable_hash_of_rollout_and_device() -> None:
    devices = fleet(50)
    plan = plan_waves("rollout-a", devices, specs(1, "10%", "100%"), 60)
    again = plan_waves(
        "rollout-a", list(reversed(devices)) + devices[:5], specs(1, "10%", "100%"), 60
    )
    assert again == plan
    expected = sorted(devices, key=lambda d: device_rank("rollout-a", d))
    assert plan.device_ids == tuple(expected)
    other = plan_waves("rollout-b", devices, specs(1, "10%", "100%"), 60)
    assert other.device_ids != plan.device_ids  # another rollout has another canary order


def test_device_rank_is_sha256_of_rollout_and_device() -> None:
    # Pinned so a change of the hash (which would reshuffle running rollouts) is noticed.
    assert device_rank("r1", "d1") == hashlib.sha256(b"r1\x00d1").digest()
    assert device_rank("r1", "d1").hex()[:16] == "8d1342dedbc6ae00"


def test_wave_of() -> None:
    plan = plan_waves("r", fleet(10), specs(1, "100%"), 60)
    canary = plan.waves[0].device_ids[0]
    assert plan.wave_of(canary) == 0
    assert plan.wave_of(plan.waves[1].device_ids[0]) == 1
    assert plan.wave_of("unknown") is None
    assert plan.devices_through(0) == (canary,)


def test_a_plan_with_a_device_in_two_waves_is_refused() -> None:
    with pytest.raises(InvalidInput, match="'a' is in waves 0 and 1"):
        WavePlan("r", (Wave(0, "1", ("a",), 60), Wave(1, "100%", ("b", "a"), 60)))


wave_lists = st.lists(
    st.one_of(
        st.integers(1, 40).map(str),
        st.integers(1, 100).map(lambda p: f"{p}%"),
        st.decimals(min_value="0.1", max_value="99.9", places=1).map(lambda d: f"{d}%"),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=150)
@given(
    rollout_id=st.text(min_size=1, max_size=8),
    devices=st.sets(st.text(min_size=1, max_size=6), max_size=60),
    waves=wave_lists,
)
def test_every_device_is_in_exactly_one_wave_and_sizes_follow_the_spec(
    rollout_id: str, devices: set[str], waves: list[str]
) -> None:
    spec = specs(*waves)
    plan = plan_waves(rollout_id, devices, spec, default_soak_s=60)
    planned = [d for w in plan.waves for d in w.device_ids]
    assert sorted(planned) == sorted(devices)  # all of them, each once
    assert all(w.size > 0 for w in plan.waves)
    if devices:
        assert plan.waves[0].size >= 1
        cumulative = [plan.cumulative_size(i) for i in range(len(plan.waves))]
        expected = sorted(set(resolve_wave_sizes(spec, len(devices))) | {len(devices)})
        assert cumulative == expected
    assert plan_waves(rollout_id, sorted(devices), spec, default_soak_s=60) == plan


@settings(max_examples=50)
@given(devices=st.sets(st.text(min_size=1, max_size=6), min_size=2, max_size=40))
def test_removing_a_device_keeps_the_order_of_the_others(devices: set[str]) -> None:
    removed = sorted(devices)[0]
    full = plan_waves("r", devices, specs("100%"), 60).device_ids
    fewer = plan_waves("r", devices - {removed}, specs("100%"), 60).device_ids
    assert fewer == tuple(d for d in full if d != removed)
