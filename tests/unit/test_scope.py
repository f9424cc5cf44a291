"""Device scopes (`core/scope.py`): a selector judged within a scope never matches a device
outside it; refusals name the device, the selector and the scope requirement."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.governance.scope import (
    decide_device,
    decide_scope,
    decide_selector,
    implies,
    selector_within,
)
from edgefleet.core.selector import Requirement, Selector, parse_selector
from tests.unit.test_selector import label_maps, requirements, selectors


@given(requirements(), requirements(), label_maps)
def test_an_implied_requirement_holds_wherever_its_premise_does(
    premise: Requirement, conclusion: Requirement, labels: dict[str, str]
) -> None:
    if implies(premise, conclusion) and premise.matches(labels):
        assert conclusion.matches(labels)


@given(selectors, selectors, label_maps)
def test_a_selector_within_a_scope_matches_only_devices_in_it(
    scope: Selector, selector: Selector, labels: dict[str, str]
) -> None:
    if selector_within(scope, selector) and selector.matches(labels):
        assert scope.matches(labels)


@given(selectors)
def test_every_selector_is_within_itself_and_the_empty_scope(selector: Selector) -> None:
    assert selector_within(selector, selector)
    assert selector_within(Selector(), selector)


@pytest.mark.parametrize(
    ("scope", "selector", "within"),
    [
        ("region=eu", "region=eu,kind=camera", True),
        ("region=eu", "region in (eu)", True),
        ("region in (eu,ch)", "region=ch", True),
        ("region=eu", "region in (eu,us)", False),
        ("region=eu", "kind=camera", False),
        ("region=eu", "", False),
        ("region!=us", "region=eu", True),
        ("region!=us", "!region", True),
        ("region notin (us,cn)", "region notin (us,cn,ru)", True),
        ("region notin (us,cn)", "region!=us", False),
        ("gpu", "gpu=yes", True),
        ("!canary", "!canary,region=eu", True),
        ("!canary", "canary!=yes", False),
    ],
)
def test_selectors_judged_against_scopes(scope: str, selector: str, within: bool) -> None:
    assert selector_within(parse_selector(scope), parse_selector(selector)) is within


def test_an_unscoped_principal_may_act_anywhere() -> None:
    assert decide_device(None, "cam-us-1", {"region": "us"}).allowed
    assert decide_selector(None, parse_selector(""), {"cam-us-1": {"region": "us"}}).allowed
    assert decide_scope(None, None).allowed


def test_a_device_outside_the_scope_is_refused_by_name() -> None:
    scope = parse_selector("region=eu")
    assert decide_device(scope, "cam-eu-1", {"region": "eu"}).allowed
    refused = decide_device(scope, "cam-us-1", {"region": "us", "kind": "camera"})
    assert not refused.allowed
    assert refused.reason == (
        "device cam-us-1 is outside scope 'region=eu' (its labels: kind=camera,region=us)"
    )


def test_a_selector_reaching_outside_names_the_missing_requirement() -> None:
    refused = decide_selector(parse_selector("region=eu"), parse_selector("kind=camera"), {})
    assert refused.reason == (
        "selector 'kind=camera' reaches outside scope 'region=eu': nothing in it requires region=eu"
    )


def test_a_scoped_principal_mints_only_tokens_within_its_scope() -> None:
    scope = parse_selector("region=eu")
    assert decide_scope(scope, parse_selector("region=eu,site=paris")).allowed
    assert "cannot mint an unscoped token" in decide_scope(scope, None).reason
    assert not decide_scope(scope, parse_selector("site=paris")).allowed


@given(st.dictionaries(st.sampled_from(["region", "kind"]), st.sampled_from(["eu", "us"])))
def test_matched_devices_outside_the_scope_are_refused(labels: dict[str, str]) -> None:
    scope = parse_selector("region=eu")
    decision = decide_selector(scope, parse_selector("region=eu"), {"dev-1": labels})
    assert decision.allowed == scope.matches(labels)
