"""Device names: legal characters, NFC, and the renames that repair an older database."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.device_names import (
    MAX_DEVICE_NAME_CHARS,
    NamedDevice,
    plan_device_renames,
    repair_device_name,
    validate_device_name,
)
from edgefleet.core.hidden_characters import escape_hidden, first_hidden, is_hidden
from edgefleet.errors import InvalidInput

# Every character the rules name: C0, DEL, C1, zero-width, bidi controls, separators.
HIDDEN = (
    [chr(c) for c in range(0x20)]
    + ["\x7f"]
    + [chr(c) for c in range(0x80, 0xA0)]
    + ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
    + ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
    + ["\u200e", "\u200f", "\u061c", "\u2028", "\u2029", "\U000e0041"]
)
legal_names = (
    st.text(
        st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Zl", "Zp")),
        min_size=1,
        max_size=40,
    )
    .map(lambda s: unicodedata.normalize("NFC", s).strip())
    .filter(bool)
)


def test_every_listed_character_is_hidden() -> None:
    assert all(is_hidden(c) for c in HIDDEN)
    assert not any(is_hidden(c) for c in "cam-1 Café 東京 ü\u00a0")


@given(legal_names)
def test_legal_names_pass_unchanged(name: str) -> None:
    assert validate_device_name(name) == name


@given(legal_names, st.sampled_from(HIDDEN), st.integers(min_value=0))
def test_a_hidden_character_anywhere_is_refused(name: str, hidden: str, at: int) -> None:
    at %= len(name) + 1
    with pytest.raises(InvalidInput) as refused:
        validate_device_name(name[:at] + hidden + name[at:])
    assert refused.value.code == "invalid_device_name"
    assert f"U+{ord(hidden):04X}" in refused.value.message


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        (" cam-1", "whitespace"),
        ("cam-1 ", "whitespace"),
        ("cam-1\u00a0", "whitespace"),
        ("cam-1\n", r"U\+000A"),
        ("x" * (MAX_DEVICE_NAME_CHARS + 1), "at most 128"),
    ],
)
def test_refused_names_say_why(name: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        validate_device_name(name)


def test_names_are_compared_in_nfc() -> None:
    assert validate_device_name("Cafe\u0301") == validate_device_name("Caf\u00e9") == "Caf\u00e9"


def test_escaping_shows_what_acts_on_a_terminal() -> None:
    assert escape_hidden("cam\x1b[2J\u202e\r\n\t", keep="\n") == "cam\\x1b[2J\\u202e\\x0d\n\\x09"
    assert escape_hidden("plain Café\u00a0text") == "plain Café\u00a0text"


@given(st.text(), st.text(alphabet="\n\t", max_size=2))
def test_escaped_text_holds_no_hidden_character_but_the_kept_ones(text: str, keep: str) -> None:
    shown = escape_hidden(text, keep)
    assert first_hidden(shown.translate({ord(c): None for c in keep})) is None
    if first_hidden(text) is None:
        assert shown == text


# Names as an older database may hold them: few letters (so they collide), whitespace,
# hidden characters, decomposed accents.
stored_names = st.lists(
    st.sampled_from(["a", "b", "-", "2", " ", "\u00a0", "\u202e", "\x85", "e\u0301", "\u00e9"]),
    max_size=6,
).map("".join)
stored_fleets = st.lists(st.tuples(stored_names, st.booleans()), max_size=12).map(
    lambda ds: [NamedDevice(f"d-{i:03d}", name, revoked) for i, (name, revoked) in enumerate(ds)]
)


def renamed(fleet: list[NamedDevice]) -> list[NamedDevice]:
    new = {r.device_id: r.new_name for r in plan_device_renames(fleet)}
    return [NamedDevice(d.id, new.get(d.id, d.name), d.revoked) for d in fleet]


@given(stored_fleets)
def test_repaired_names_are_legal_and_unique_among_devices_not_revoked(
    fleet: list[NamedDevice],
) -> None:
    after = renamed(fleet)
    assert all(validate_device_name(d.name) == d.name for d in after)
    live = [d.name for d in after if not d.revoked]
    assert len(live) == len(set(live))


@given(stored_fleets)
def test_renaming_keeps_legal_first_names_and_is_a_fixpoint(fleet: list[NamedDevice]) -> None:
    plan = plan_device_renames(fleet)
    assert plan == plan_device_renames(fleet)
    assert plan_device_renames(renamed(fleet)) == []
    renamed_ids = {r.device_id for r in plan}
    held: set[str] = set()
    for device in fleet:
        legal = repair_device_name(device.name, device.id) == device.name
        if legal and (device.revoked or device.name not in held):
            assert device.id not in renamed_ids
        if not device.revoked:
            held.add(repair_device_name(device.name, device.id))


def test_later_duplicates_get_the_first_free_suffix_and_a_reason() -> None:
    fleet = [
        NamedDevice("d-1", "cam", False),
        NamedDevice("d-2", "cam-2", False),
        NamedDevice("d-3", "cam", False),
        NamedDevice("d-4", "cam", True),
        NamedDevice("d-5", "cam\u202e", False),
        NamedDevice("d-6", "\u200b", False),
    ]
    assert [(r.device_id, r.new_name, r.reason) for r in plan_device_renames(fleet)] == [
        ("d-3", "cam-3", "the name was already held by d-1"),
        ("d-5", "cam-4", "not a legal device name; the name was already held by d-1"),
        ("d-6", "d-6", "not a legal device name"),
    ]


def test_a_suffix_never_makes_a_name_too_long() -> None:
    long = "x" * MAX_DEVICE_NAME_CHARS
    plan = plan_device_renames([NamedDevice("d-1", long, False), NamedDevice("d-2", long, False)])
    assert plan[0].new_name == "x" * (MAX_DEVICE_NAME_CHARS - 2) + "-2"
