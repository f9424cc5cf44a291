"""Scopes: the one decision whether a principal bound to a device scope may act on devices.

An API token may carry a *scope*, a label selector (`region=eu`). Its role still says which
permissions it holds (`security/rbac.py`); the scope says on which devices it may use the
ones that change devices. Three kinds of target are judged:

- one device: its labels must match the scope;
- a selector (a rollout's target, a workload's constraints, a selector given to
  set-release): it must *imply* the scope, so that no device it matches, now or after a
  relabelling, can lie outside it; and every device it matches now must be in scope;
- another scope (a token minted by a scoped admin): it must imply the minter's scope.

Implication is judged requirement by requirement, without looking at the fleet: each
requirement of the scope must follow from one requirement of the selector. It is sound
(`selector_within(scope, s)` means every label set `s` matches, `scope` matches too) but not
complete: `tier=a` does not reach outside `tier in (a,b)`, and is judged within it, yet
`region=eu,region=us` (matching nothing) is not judged within `zone=z1`. A refusal names
the scope requirement no selector requirement implies.

>>> from edgefleet.core.selector import parse_selector
>>> scope = parse_selector("region=eu")
>>> decide_selector(scope, parse_selector("region=eu,kind=camera"), {}).allowed
True
>>> print(decide_selector(scope, parse_selector("kind=camera"), {}).reason)
selector 'kind=camera' reaches outside scope 'region=eu': nothing in it requires region=eu
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edgefleet.core.selector import Requirement, Selector, SelectorOp

_POSITIVE = frozenset({SelectorOp.EQUALS, SelectorOp.IN})
_NEGATIVE = frozenset({SelectorOp.NOT_EQUALS, SelectorOp.NOT_IN})


@dataclass(frozen=True)
class ScopeDecision:
    """Whether the action is within the scope; `reason` says why not (empty when it is)."""

    allowed: bool
    reason: str = ""


ALLOWED = ScopeDecision(True)

# A scope may name a group instead of a selector: `group:eu-cameras` is that group's
# selector, looked up at every authentication (so it follows the group's changes).
GROUP_PREFIX = "group:"


def group_of_scope(scope: str) -> str | None:
    """The group a `group:NAME` scope names, or None for a label selector.

    >>> group_of_scope("group:eu-cameras"), group_of_scope("region=eu")
    ('eu-cameras', None)
    """
    return scope.removeprefix(GROUP_PREFIX) if scope.startswith(GROUP_PREFIX) else None


def implies(premise: Requirement, conclusion: Requirement) -> bool:
    """True when every label set satisfying `premise` satisfies `conclusion` (judged on the
    two requirements alone)."""
    if premise.key != conclusion.key:
        return False
    values, wanted = set(premise.values), set(conclusion.values)
    match conclusion.op:
        case SelectorOp.EQUALS | SelectorOp.IN:
            return premise.op in _POSITIVE and values <= wanted
        case SelectorOp.NOT_EQUALS | SelectorOp.NOT_IN:
            if premise.op in _POSITIVE:
                return not values & wanted
            if premise.op in _NEGATIVE:
                return wanted <= values
            return premise.op is SelectorOp.NOT_EXISTS
        case SelectorOp.EXISTS:
            return premise.op in _POSITIVE or premise.op is SelectorOp.EXISTS
        case SelectorOp.NOT_EXISTS:
            return premise.op is SelectorOp.NOT_EXISTS


def selector_within(scope: Selector, selector: Selector) -> bool:
    """True when everything `selector` matches, `scope` matches too (see the module
    docstring for how this is judged)."""
    return _unimplied(scope, selector) is None


def _unimplied(scope: Selector, selector: Selector) -> Requirement | None:
    for needed in scope.requirements:
        if not any(implies(given, needed) for given in selector.requirements):
            return needed
    return None


def decide_device(scope: Selector | None, device: str, labels: Mapping[str, str]) -> ScopeDecision:
    """May a principal with `scope` (None: unscoped) act on the device named `device`?"""
    if scope is None or scope.matches(labels):
        return ALLOWED
    shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
    return ScopeDecision(False, f"device {device} is outside scope '{scope}' (its labels: {shown})")


def decide_selector(
    scope: Selector | None, selector: Selector, matched: Mapping[str, Mapping[str, str]]
) -> ScopeDecision:
    """May a principal with `scope` act on every device `selector` matches? `matched` maps
    the names of the devices it matches now to their labels."""
    if scope is None:
        return ALLOWED
    missing = _unimplied(scope, selector)
    if missing is not None:
        return ScopeDecision(
            False,
            f"selector '{selector}' reaches outside scope '{scope}': "
            f"nothing in it requires {missing}",
        )
    for name, labels in sorted(matched.items()):
        decision = decide_device(scope, name, labels)
        if not decision.allowed:
            return decision
    return ALLOWED


def decide_scope(scope: Selector | None, wanted: Selector | None) -> ScopeDecision:
    """May a principal with `scope` bind a new token to `wanted` (None: unscoped)?"""
    if scope is None:
        return ALLOWED
    if wanted is None:
        return ScopeDecision(False, f"a principal scoped to '{scope}' cannot mint an unscoped "
                                    "token")  # fmt: skip
    return decide_selector(scope, wanted, {})
