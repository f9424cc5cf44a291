"""Label selectors: parsing, canonical form, and matching semantics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.selector import Requirement, Selector, SelectorOp, parse_selector
from edgefleet.errors import SelectorSyntaxError

keys = st.sampled_from(["region", "tier", "canary", "example.com/rack", "zone"])
values = st.sampled_from(["eu", "us", "a", "b", "gold", "1", "x-y_z.2"])
label_maps = st.dictionaries(keys, values, max_size=5)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    op = draw(st.sampled_from(list(SelectorOp)))
    key = draw(keys)
    if op in (SelectorOp.EQUALS, SelectorOp.NOT_EQUALS):
        return Requirement(key, op, (draw(values),))
    if op in (SelectorOp.IN, SelectorOp.NOT_IN):
        chosen = draw(st.sets(values, min_size=1, max_size=3))
        return Requirement(key, op, tuple(sorted(chosen)))
    return Requirement(key, op)


selectors = st.lists(requirements(), max_size=4).map(lambda rs: Selector(tuple(rs)))


def reference_match(req: Requirement, labels: dict[str, str]) -> bool:
    """The semantics spelled out plainly, independent of the implementation."""
    has = req.key in labels
    if req.op is SelectorOp.EQUALS:
        return has and labels[req.key] == req.values[0]
    if req.op is SelectorOp.NOT_EQUALS:
        return not has or labels[req.key] != req.values[0]
    if req.op is SelectorOp.IN:
        return has and labels[req.key] in req.values
    if req.op is SelectorOp.NOT_IN:
        return not has or labels[req.key] not in req.values
    if req.op is SelectorOp.EXISTS:
        return has
    return not has


@given(selectors)
def test_canonical_form_parses_back_to_the_same_selector(selector: Selector) -> None:
    assert parse_selector(str(selector)) == selector


@given(selectors, label_maps)
def test_matching_is_the_conjunction_of_requirements(
    selector: Selector, labels: dict[str, str]
) -> None:
    expected = all(reference_match(r, labels) for r in selector.requirements)
    assert selector.matches(labels) is expected
    assert parse_selector(str(selector)).matches(labels) is expected


@given(label_maps)
def test_empty_selector_matches_everything(labels: dict[str, str]) -> None:
    assert parse_selector("").matches(labels)
    assert parse_selector("   ").matches(labels)


def test_the_documented_example() -> None:
    selector = parse_selector("region=eu,tier in (a,b),!canary")
    assert selector.matches({"region": "eu", "tier": "a"})
    assert not selector.matches({"region": "eu", "tier": "a", "canary": "yes"})
    assert not selector.matches({"region": "eu", "tier": "c"})
    assert not selector.matches({"tier": "a"})


@pytest.mark.parametrize(
    ("text", "op", "values"),
    [
        ("a==b", SelectorOp.EQUALS, ("b",)),
        ("a = b", SelectorOp.EQUALS, ("b",)),
        ("a!=b", SelectorOp.NOT_EQUALS, ("b",)),
        ("a notin ( x , y )", SelectorOp.NOT_IN, ("x", "y")),
        ("a", SelectorOp.EXISTS, ()),
        ("! a", SelectorOp.NOT_EXISTS, ()),
        ("a=", SelectorOp.EQUALS, ("",)),
    ],
)
def test_syntax_variants(text: str, op: SelectorOp, values: tuple[str, ...]) -> None:
    [req] = parse_selector(text).requirements
    assert (req.key, req.op, req.values) == ("a", op, values)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a=b,,c", "expected a label key"),
        ("tier in (a", "expected ',' or ')'"),
        ("tier in a,b", "expected '('"),
        ("a=b c=d", "expected ',' or end"),
        ("a=(b)", "expected a label value"),
        ("bad key=1", "expected"),
        ("a=b;c", "unexpected character ';'"),
        ("-a=b", "invalid label key"),
        ("a=" + "v" * 64, "invalid value"),
    ],
)
def test_errors_say_what_was_expected(text: str, fragment: str) -> None:
    with pytest.raises(SelectorSyntaxError) as e:
        parse_selector(text)
    assert fragment in e.value.message
    assert text in e.value.message
