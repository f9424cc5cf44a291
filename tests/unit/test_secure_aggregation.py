"""Secure aggregation: the control plane's sum equals the sum of the survivors' updates,
exactly, whoever drops out after masking; what it holds of one client is uniform noise."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.learning.ring import pack, quantise, ring_bits_for, to_signed, unpack
from edgefleet.core.learning.secure_client import mask_input, reveal_shares, share_secrets
from edgefleet.core.learning.secure_round import (
    Phase,
    accept,
    advance,
    aggregate,
    open_round,
    view_for,
)
from edgefleet.errors import Conflict, InvalidInput
from edgefleet.security.secure_aggregation import (
    RoundKeys,
    decrypt_share,
    encrypt_share,
    mask_seed,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
JOB = "job"


def run_round(
    n: int,
    threshold: int,
    drop_before_shares: set[int],
    drop_after_shares: set[int],
    drop_before_unmask: set[int],
    seed: int,
    length: int = 50,
) -> tuple[np.ndarray | None, dict[str, np.ndarray], Phase]:
    """One round through the real protocol objects; returns the aggregate (signed), each
    client's quantised update, and the final phase."""
    rnd = random.Random(seed)
    entropy = rnd.randbytes
    clients = [f"dev-{i:02d}" for i in range(n)]
    ring_bits = ring_bits_for(8, n)
    keys = {c: RoundKeys.from_entropy(entropy(96)) for c in clients}
    rng = np.random.default_rng(seed)
    updates = {c: quantise(rng.normal(0, 0.1, length), 0.25, 8, rng) for c in clients}
    state = open_round(JOB, 1, tuple(clients), threshold, length, ring_bits, 60.0, NOW)
    now = NOW
    for c in clients:
        state = accept(state, c, Phase.KEYS, keys[c].public())
    state = advance(state, now)
    assert state.phase is Phase.SHARES
    held: dict[str, dict[str, bytes]] = {c: {} for c in clients}
    peers: dict[str, Any] = {}
    for i, c in enumerate(clients):
        if i in drop_before_shares:
            continue
        view = view_for(state, c)
        peers = view["keys"]
        plain = share_secrets(
            keys[c].self_seed, keys[c].s_sk, list(view["keys"]), threshold, entropy
        )
        cts = {
            v: encrypt_share(JOB, 1, c, v, keys[c].c_sk, view["keys"][v]["c_pk"], p)
            for v, p in plain.items()
        }
        state = accept(state, c, Phase.SHARES, cts)
    now += timedelta(seconds=60)
    state = advance(state, now)
    if state.phase is Phase.FAILED:
        return None, updates, state.phase
    for i, c in enumerate(clients):
        if i in drop_before_shares or i in drop_after_shares:
            continue
        view = view_for(state, c)
        for u, ct in view["shares"].items():
            held[c][u] = decrypt_share(JOB, 1, u, c, keys[c].c_sk, peers[u]["c_pk"], ct)
        seeds = {v: mask_seed(JOB, 1, keys[c].s_sk, peers[v]["s_pk"]) for v in view["u2"] if v != c}
        y = mask_input(updates[c] % (1 << ring_bits), c, keys[c].self_seed, seeds, ring_bits)
        state = accept(state, c, Phase.MASKED, pack(y, ring_bits))
    now += timedelta(seconds=60)
    state = advance(state, now)
    if state.phase is Phase.FAILED:
        return None, updates, state.phase
    for i, c in enumerate(clients):
        if i in drop_before_shares | drop_after_shares | drop_before_unmask:
            continue
        view = view_for(state, c)
        state = accept(
            state, c, Phase.UNMASK, reveal_shares(c, held[c], view["u2"], view["u3"], threshold)
        )
    now += timedelta(seconds=60)
    state = advance(state, now)
    if state.phase is Phase.FAILED:
        return None, updates, state.phase
    total = aggregate(state, lambda sk, pk: mask_seed(JOB, 1, sk, pk))
    return to_signed(total, ring_bits), updates, state.phase


def survivors_sum(updates: dict[str, np.ndarray], dropped: set[int]) -> np.ndarray:
    kept = [u for i, (_, u) in enumerate(sorted(updates.items())) if i not in dropped]
    return np.sum(kept, axis=0)


def test_no_dropout_sums_exactly() -> None:
    total, updates, phase = run_round(4, 3, set(), set(), set(), seed=1)
    assert phase is Phase.DONE
    assert total is not None and (total == survivors_sum(updates, set())).all()


def test_dropouts_after_masking_keys_still_aggregate_exactly() -> None:
    # Two of six send their shares, then never send a masked input: their pairwise masks
    # sit in the survivors' inputs and must be rebuilt from the shares.
    total, updates, phase = run_round(6, 3, set(), {1, 4}, set(), seed=2)
    assert phase is Phase.DONE
    assert total is not None and (total == survivors_sum(updates, {1, 4})).all()


def test_dropouts_during_unmasking_are_tolerated_down_to_the_threshold() -> None:
    total, updates, phase = run_round(6, 3, {0}, {2}, {3}, seed=3)
    assert phase is Phase.DONE
    assert total is not None and (total == survivors_sum(updates, {0, 2})).all()


def test_below_threshold_the_round_fails_with_a_reason() -> None:
    total, _, phase = run_round(4, 3, set(), {0, 1}, set(), seed=4)
    assert phase is Phase.FAILED and total is None


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 7), st.data())
def test_any_dropout_pattern_above_threshold_aggregates_exactly(
    n: int, data: st.DataObject
) -> None:
    threshold = data.draw(st.integers(2, n - 1))
    order = data.draw(st.permutations(range(n)))
    k1 = data.draw(st.integers(0, n - threshold))
    k2 = data.draw(st.integers(0, n - threshold - k1))
    k3 = data.draw(st.integers(0, n - threshold - k1 - k2))
    before, after, unmask = (
        set(order[:k1]),
        set(order[k1 : k1 + k2]),
        set(order[k1 + k2 : k1 + k2 + k3]),
    )
    total, updates, phase = run_round(
        n, threshold, before, after, unmask, seed=data.draw(st.integers(0, 2**32)), length=8
    )
    assert phase is Phase.DONE
    assert total is not None and (total == survivors_sum(updates, before | after)).all()


def test_a_masked_input_alone_does_not_show_the_update() -> None:
    rnd = random.Random(5)
    ring_bits = ring_bits_for(8, 4)
    x = np.zeros(4096, dtype=np.int64)  # the most telling update there is
    seeds = {"b": rnd.randbytes(32), "c": rnd.randbytes(32)}
    y = mask_input(x, "a", rnd.randbytes(32), seeds, ring_bits)
    counts = np.bincount(y, minlength=1 << ring_bits)
    assert np.count_nonzero(y == 0) < 10  # uniform over 1024 values: ~4 zeros expected
    assert counts.max() < 25


def test_a_client_never_reveals_both_secrets_of_one_peer() -> None:
    rnd = random.Random(6)
    keys = RoundKeys.from_entropy(rnd.randbytes(96))
    plain = share_secrets(keys.self_seed, keys.s_sk, ["a", "b", "c"], 2, rnd.randbytes)
    shown = reveal_shares("a", plain, ["a", "b", "c"], ["a", "b"], 2)
    assert shown["c"] == plain["c"][34:] and shown["b"] == plain["b"][:34]
    with pytest.raises(InvalidInput):  # survivors below the threshold: nothing revealed
        reveal_shares("a", plain, ["a", "b", "c"], ["a"], 2)
    with pytest.raises(InvalidInput):  # a survivor that never sent shares
        reveal_shares("a", plain, ["a", "b"], ["a", "b", "c"], 2)


def test_shares_do_not_decrypt_in_another_round_or_pair() -> None:
    rnd = random.Random(7)
    a, b = (RoundKeys.from_entropy(rnd.randbytes(96)) for _ in range(2))
    ct = encrypt_share(JOB, 1, "a", "b", a.c_sk, b.public()["c_pk"], b"secret")
    assert decrypt_share(JOB, 1, "a", "b", b.c_sk, a.public()["c_pk"], ct) == b"secret"
    with pytest.raises(InvalidInput):
        decrypt_share(JOB, 2, "a", "b", b.c_sk, a.public()["c_pk"], ct)
    with pytest.raises(InvalidInput):
        decrypt_share(JOB, 1, "b", "a", b.c_sk, a.public()["c_pk"], ct)


def test_out_of_step_and_repeated_answers_are_refused() -> None:
    state = open_round(JOB, 1, ("a", "b", "c"), 2, 4, 10, 60.0, NOW)
    keys = RoundKeys.from_entropy(bytes(range(96)))
    with pytest.raises(Conflict):
        accept(state, "a", Phase.MASKED, b"\0" * 5)
    with pytest.raises(Conflict):
        accept(state, "zz", Phase.KEYS, keys.public())
    state = accept(state, "a", Phase.KEYS, keys.public())
    with pytest.raises(Conflict):
        accept(state, "a", Phase.KEYS, keys.public())
    with pytest.raises(InvalidInput):
        accept(state, "b", Phase.KEYS, {"c_pk": b"short", "s_pk": b"x" * 32})


def test_a_step_waits_for_everyone_until_its_deadline() -> None:
    state = open_round(JOB, 1, ("a", "b", "c"), 2, 4, 10, 100.0, NOW)
    rnd = random.Random(8)
    for c in "ab":
        state = accept(state, c, Phase.KEYS, RoundKeys.from_entropy(rnd.randbytes(96)).public())
    assert advance(state, NOW + timedelta(seconds=1)).phase is Phase.KEYS
    moved = advance(state, NOW + timedelta(seconds=15))
    assert moved.phase is Phase.SHARES and moved.expected() == ("a", "b")


def test_pack_round_trips_and_refuses_wrong_lengths() -> None:
    values = np.array([0, 1, 1023, 512, 7], dtype=np.int64)
    assert (unpack(pack(values, 10), 5, 10) == values).all()
    with pytest.raises(InvalidInput):
        unpack(b"\0" * 3, 5, 10)
    with pytest.raises(InvalidInput):
        ring_bits_for(16, 1 << 20)
