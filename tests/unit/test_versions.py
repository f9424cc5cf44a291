from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.updates.versions import (
    Version,
    parse_loose_version,
    parse_package_requirement,
    parse_specifier,
    parse_version,
)
from edgefleet.errors import InvalidInput

# The precedence example of semver.org section 11, lowest first.
SEMVER_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "2.0.0",
]


def test_parses_every_part() -> None:
    v = parse_version("1.4.0-rc.1+build.7")
    assert (v.major, v.minor, v.patch) == (1, 4, 0)
    assert v.prerelease == ("rc", "1")
    assert v.build == ("build", "7")
    assert str(v) == "1.4.0-rc.1+build.7"


def test_semver_precedence_example() -> None:
    versions = [parse_version(t) for t in SEMVER_ORDER]
    assert sorted(reversed(versions)) == versions
    assert all(a < b for a, b in itertools.pairwise(versions))


def test_build_metadata_does_not_affect_precedence() -> None:
    assert parse_version("1.0.0+a") == parse_version("1.0.0+b")
    assert not parse_version("1.0.0+a") < parse_version("1.0.0+b")
    assert hash(parse_version("1.0.0+a")) == hash(parse_version("1.0.0"))


def test_numeric_identifiers_compare_as_numbers() -> None:
    assert parse_version("1.0.0-2") < parse_version("1.0.0-10")
    assert parse_version("1.0.0-10") < parse_version("1.0.0-a")


@pytest.mark.parametrize(
    "text",
    ["1", "1.2", "01.2.3", "1.02.3", "1.2.3-", "1.2.3-01", "1.2.3+", "v1.2.3", "1.2.3-a..b", ""],
)
def test_strict_parse_refuses_non_semver(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_version(text)


def test_loose_parse_pads_missing_components() -> None:
    assert parse_loose_version("1.17") == Version(1, 17, 0)
    assert parse_loose_version("v2") == Version(2, 0, 0)
    assert parse_loose_version("1.17.3-rc.1") == Version(1, 17, 3, ("rc", "1"))
    with pytest.raises(InvalidInput):
        parse_loose_version("1.17.3.post1")


@pytest.mark.parametrize(
    ("spec", "version", "expected"),
    [
        (">=1.17", "1.17.0", True),
        (">=1.17", "1.16.9", False),
        (">=1.17,<2", "1.99.0", True),
        (">=1.17,<2", "2.0.0", False),
        (">=1.17,<2", "2.0.0-rc.1", False),  # below 2 never means the 2.0 release candidate
        ("<2.0.0-rc.2", "2.0.0-rc.1", True),
        ("==1.2.*", "1.2.9", True),
        ("==1.2.*", "1.3.0", False),
        ("!=1.2.*", "1.3.0", True),
        ("==1.2", "1.2.0", True),
        ("==1.2", "1.2.1", False),
        ("!=1.3.0", "1.3.0", False),
        (">1.0", "1.0.1", True),
        ("<=1.0", "1.0.0", True),
        ("~=1.17", "1.30.0", True),
        ("~=1.17", "2.0.0", False),
        ("~=1.17.2", "1.17.9", True),
        ("~=1.17.2", "1.18.0", False),
        ("", "0.0.1", True),
    ],
)
def test_specifier_matching(spec: str, version: str, expected: bool) -> None:
    assert parse_specifier(spec).matches(parse_loose_version(version)) is expected


@pytest.mark.parametrize("spec", [">=", "=>1.0", ">=1.0,", ">=1.0;<2", ">1.*", "==1.0-rc.*", "1.0"])
def test_bad_specifiers_are_refused_naming_the_text(spec: str) -> None:
    with pytest.raises(InvalidInput, match="invalid version specifier"):
        parse_specifier(spec)


def test_package_requirement() -> None:
    req = parse_package_requirement("onnxruntime>=1.17,<2")
    assert req.name == "onnxruntime"
    assert req.matches(parse_loose_version("1.18"))
    assert not req.matches(parse_loose_version("1.16"))
    assert str(req) == "onnxruntime>=1.17,<2"
    assert parse_package_requirement("onnxruntime").matches(Version(0, 0, 1))
    with pytest.raises(InvalidInput):
        parse_package_requirement(">=1.17")


identifiers = st.one_of(
    st.integers(min_value=0, max_value=50).map(str),
    st.text(alphabet="abcxyz-", min_size=1, max_size=4),
)
versions = st.builds(
    Version,
    st.integers(0, 5),
    st.integers(0, 5),
    st.integers(0, 5),
    st.lists(identifiers, max_size=3).map(tuple),
)


@given(versions)
def test_text_round_trips(v: Version) -> None:
    assert parse_version(str(v)) == v


@given(versions, versions)
def test_order_is_total_and_consistent_with_equality(a: Version, b: Version) -> None:
    assert sum([a < b, a == b, a > b]) == 1
    assert (a <= b) == (not a > b)


@given(versions, versions, versions)
def test_order_is_transitive(a: Version, b: Version, c: Version) -> None:
    if a <= b <= c:
        assert a <= c


@given(versions)
def test_every_release_is_above_its_prereleases(v: Version) -> None:
    release = Version(v.major, v.minor, v.patch)
    assert v <= release
    assert (v == release) == (not v.prerelease)


@given(versions)
def test_specifier_text_round_trips(v: Version) -> None:
    for spec in (f">={v}", f"<{v}", f"=={v.major}.{v.minor}.*", f"~={v.major}.{v.minor}"):
        parsed = parse_specifier(spec)
        assert parse_specifier(str(parsed)) == parsed
