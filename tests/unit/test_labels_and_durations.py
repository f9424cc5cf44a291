"""Label arguments and durations as operators type them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.durations import format_duration, parse_duration
from edgefleet.core.labels import parse_label_assignments, parse_label_change, validate_labels
from edgefleet.errors import InvalidInput


def test_label_change_sets_and_removes() -> None:
    change = parse_label_change(["tier=gold", "canary-", "example.com/rack=r1"])
    assert change.apply({"canary": "yes", "tier": "b", "keep": "1"}) == {
        "tier": "gold",
        "keep": "1",
        "example.com/rack": "r1",
    }


@pytest.mark.parametrize(
    "args", [["noequals"], ["-"], ["a=b", "a-"], ["bad key=v"], ["k=bad value"], ["UP/k=v"]]
)
def test_bad_label_arguments(args: list[str]) -> None:
    with pytest.raises(InvalidInput):
        parse_label_change(args)


def test_assignments_refuse_removal_and_too_many_labels() -> None:
    with pytest.raises(InvalidInput):
        parse_label_assignments(["a-"])
    with pytest.raises(InvalidInput, match="too many labels"):
        validate_labels({f"k{i}": "v" for i in range(65)})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        ("90s", 90),
        ("15m", 900),
        ("24h", 86400),
        ("7d", 604800),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("1.5h", 5400),
        ("2w", 1209600),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "5 parsecs", "1h-3m", "m5", "1h 30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1180591620717411303424", "9" * 400 + "d", "36501d", "1e999"])
def test_durations_beyond_a_century_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(text)


def test_a_century_is_the_longest_duration() -> None:
    assert parse_duration("36500d") == timedelta(days=36_500)


@given(st.integers(min_value=0, max_value=10**7))
def test_formatted_durations_parse_back_close(seconds: int) -> None:
    back = parse_duration(format_duration(seconds)).total_seconds()
    # format_duration keeps two units, so it may round away the smallest one.
    assert abs(back - seconds) <= max(1, seconds * 0.02, 3600 if seconds >= 86400 else 60)
