"""Lease rules (core.lease): one holder of an unexpired lease, tokens that only grow, fences
that a takeover invalidates, and a holder that stops acting before its lease ends."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.lease import (
    Fence,
    Lease,
    acquire,
    act_until,
    fence_holds,
    release,
    renew_interval_s,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(seconds=6)
NAME = "rollout-controller"

# A step: which replica asks, how many ms pass before it does, and whether it releases
# instead of acquiring.
steps = st.lists(
    st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.integers(0, 9000), st.booleans()),
    max_size=60,
)


@given(steps)
def test_one_holder_of_an_unexpired_lease_and_tokens_only_grow(
    script: list[tuple[str, int, bool]],
) -> None:
    stored: Lease | None = None
    now = T0
    granted: list[Lease] = []  # every lease a replica was told it holds
    for replica, wait_ms, releases in script:
        now += timedelta(milliseconds=wait_ms)
        if releases:
            if stored is not None:
                stored = release(stored, Fence(NAME, replica, stored.token), now)
            continue
        before = stored
        after = acquire(NAME, stored, replica, now, TTL)
        if after is None:
            assert before is not None and before.is_live(now) and before.holder != replica
            continue
        if before is not None:
            if before.holder != after.holder:  # granted only once the other's lease ended
                assert not before.is_live(now)
            if before.holder != after.holder or not before.is_live(now):
                assert after.token == before.token + 1
            else:
                assert after.token == before.token
        stored = after
        granted.append(after)
    for earlier, later in itertools.pairwise(granted):
        assert later.token >= earlier.token
        if later.holder != earlier.holder:
            assert later.token > earlier.token


def test_renewal_keeps_the_token_and_a_takeover_increments_it() -> None:
    first = acquire(NAME, None, "r1", T0, TTL)
    assert first == Lease(NAME, "r1", 1, T0 + TTL)
    renewed = acquire(NAME, first, "r1", T0 + timedelta(seconds=2), TTL)
    assert renewed is not None and renewed.token == 1
    assert renewed.expires_at == T0 + timedelta(seconds=8)
    assert acquire(NAME, renewed, "r2", T0 + timedelta(seconds=7), TTL) is None
    taken = acquire(NAME, renewed, "r2", T0 + timedelta(seconds=8), TTL)
    assert taken is not None and (taken.holder, taken.token) == ("r2", 2)
    # The former holder coming back after its lapse is a new acquisition too.
    back = acquire(NAME, taken, "r1", T0 + timedelta(seconds=20), TTL)
    assert back is not None and back.token == 3


def test_a_takeover_invalidates_the_former_fence_but_expiry_alone_does_not() -> None:
    first = acquire(NAME, None, "r1", T0, TTL)
    assert first is not None
    fence = Fence(NAME, "r1", first.token)
    assert fence_holds(first, fence)  # even after expires_at: nobody else acted
    taken = acquire(NAME, first, "r2", T0 + TTL, TTL)
    assert not fence_holds(taken, fence)
    assert fence_holds(taken, Fence(NAME, "r2", 2))


def test_release_hands_the_lease_over_at_once() -> None:
    first = acquire(NAME, None, "r1", T0, TTL)
    released = release(first, Fence(NAME, "r1", 1), T0 + timedelta(seconds=1))
    assert released is not None and not released.is_live(T0 + timedelta(seconds=1))
    taken = acquire(NAME, released, "r2", T0 + timedelta(seconds=1), TTL)
    assert taken is not None and taken.token == 2
    # A stale fence releases nothing.
    assert release(taken, Fence(NAME, "r1", 1), T0 + timedelta(seconds=2)) == taken


@given(st.floats(0.3, 600), st.floats(0, 1e6), st.floats(0, 1))
def test_a_holder_stops_acting_before_its_lease_ends(
    ttl_s: float, sent: float, skew_share: float
) -> None:
    """The lease began no earlier than the statement was sent; with clocks that disagree by
    less than the margin, the holder's local deadline comes before the lease's end."""
    margin = ttl_s - (act_until(sent, ttl_s) - sent)
    skew = skew_share * margin * 0.99
    lease_ends_at_local = sent - skew + ttl_s
    assert act_until(sent, ttl_s) < lease_ends_at_local
    assert 3 * renew_interval_s(ttl_s) <= ttl_s + 1e-9
