"""Four-eyes approval: who may approve a change another operator requested.

A change a policy holds for approval (`core.policy.approval_reasons`, a root rotation under
`approval.trust_changes`) waits until a *different* operator approves it. Operators are told
apart by their token and by their name: a second token of the same name, or a dashboard
session opened with one (`ui:NAME`), is the same person's, and approving one's own change
with it is refused too.

>>> decide_approver(Requester("tok-1", "alice"), Requester("tok-2", "bob"))
ApprovalDecision(allowed=True, reason='')
>>> decide_approver(Requester("tok-1", "alice"), Requester("tok-3", "alice")).reason
'alice requested this change and cannot approve it too: a second operator must'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Requester:
    """An operator as a change remembers them: the token they used and its name."""

    token_id: str
    name: str

    @classmethod
    def from_actor(cls, actor: str) -> Requester:
        """The requester an audit actor names: `alice (tok-1)`, or `system` whose name is
        its token id (token names hold neither spaces nor parentheses).

        >>> Requester.from_actor("alice (tok-1)")
        Requester(token_id='tok-1', name='alice')
        """
        name, _, rest = actor.partition(" (")
        return cls(rest.removesuffix(")") if rest else name, name)


@dataclass(frozen=True)
class ApprovalDecision:
    allowed: bool
    reason: str = ""


# A dashboard session is a token named `ui:NAME` acting for the holder of NAME's token.
SESSION_PREFIX = "ui:"


def person_of(name: str) -> str:
    """Whom a token name stands for: `ui:alice` (alice's dashboard session) is alice."""
    return name.removeprefix(SESSION_PREFIX)


def decide_approver(requested_by: Requester, approver: Requester) -> ApprovalDecision:
    """May `approver` approve the change `requested_by` asked for?"""
    if approver.token_id == requested_by.token_id or person_of(approver.name) == person_of(
        requested_by.name
    ):
        return ApprovalDecision(
            False,
            f"{approver.name} requested this change and cannot approve it too: a second "
            "operator must",
        )
    return ApprovalDecision(True)
