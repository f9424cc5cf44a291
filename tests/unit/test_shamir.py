from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.learning.shamir import Share, combine_shares, split_secret
from edgefleet.errors import InvalidInput


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=31, max_size=31), st.integers(1, 6), st.integers(0, 4), st.integers())
def test_any_threshold_of_shares_rebuilds_the_secret(
    secret: bytes, t: int, extra: int, seed: int
) -> None:
    r = random.Random(seed)
    shares = split_secret(secret, t, t + extra, r.randbytes)
    for subset in itertools.islice(itertools.combinations(shares, t), 10):
        assert combine_shares(list(subset), 31) == secret


def test_fewer_than_threshold_shares_do_not_rebuild_it() -> None:
    r = random.Random(1)
    secret = r.randbytes(31)
    shares = split_secret(secret, 3, 5, r.randbytes)
    assert combine_shares(shares[:3], 31) == secret
    assert combine_shares(shares[:2], 32) != bytes(1) + secret


def test_shares_survive_the_wire_and_bad_ones_are_refused() -> None:
    r = random.Random(2)
    shares = split_secret(b"k" * 32, 2, 3, r.randbytes)
    assert [Share.from_bytes(s.to_bytes()) for s in shares] == shares
    with pytest.raises(InvalidInput):
        Share.from_bytes(b"\0" * 10)
    with pytest.raises(InvalidInput):
        Share.from_bytes(bytes(34))  # x = 0 is the secret's own point
    with pytest.raises(InvalidInput):
        combine_shares([shares[0], shares[0]], 32)
    with pytest.raises(InvalidInput):
        split_secret(b"k", 4, 3, r.randbytes)
    with pytest.raises(InvalidInput):  # not an element of the field
        split_secret(b"\xff" * 32, 2, 3, r.randbytes)
