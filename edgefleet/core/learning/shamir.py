"""Shamir secret sharing over the prime field GF(2**255 - 19): t of n shares rebuild a
secret below that prime (a 32-byte key with its top bit clear, as X25519 keys are used);
any t - 1 of them say nothing about it. A share is 34 bytes: x (2) and y (32).

The coefficients come from `entropy` (os.urandom in the shells; a seeded source in tests),
so this module stays free of hidden randomness.

>>> import random
>>> r = random.Random(1)
>>> shares = split_secret(b"seed" * 8, 3, 5, lambda n: r.randbytes(n))
>>> combine_shares(shares[1:4], 32) == b"seed" * 8
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgefleet.errors import InvalidInput

PRIME = (1 << 255) - 19
SECRET_BYTES = 32
_Y_BYTES = 32
SHARE_BYTES = 2 + _Y_BYTES


@dataclass(frozen=True)
class Share:
    x: int  # 1..n, never 0 (the secret's own point)
    y: int

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(2, "big") + self.y.to_bytes(_Y_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) != SHARE_BYTES:
            raise InvalidInput("share: wrong length")
        x, y = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:], "big")
        if not 1 <= x < PRIME or y >= PRIME:
            raise InvalidInput("share: out of the field")
        return cls(x, y)


def split_secret(
    secret: bytes, threshold: int, count: int, entropy: Callable[[int], bytes]
) -> list[Share]:
    """`count` shares of `secret`, any `threshold` of which rebuild it (share i has x = i+1)."""
    if len(secret) > SECRET_BYTES or int.from_bytes(secret, "big") >= PRIME:
        raise InvalidInput(f"secret: at most {SECRET_BYTES} bytes, below the field's prime")
    if not 1 <= threshold <= count < 1 << 16:
        raise InvalidInput(f"shares: need 1 <= threshold ({threshold}) <= count ({count})")
    coefficients = [int.from_bytes(secret, "big")] + [
        int.from_bytes(entropy(_Y_BYTES + 16), "big") % PRIME for _ in range(threshold - 1)
    ]
    shares = []
    for x in range(1, count + 1):
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares.append(Share(x, y))
    return shares


def combine_shares(shares: Sequence[Share], secret_bytes: int) -> bytes:
    """The secret from at least `threshold` shares with distinct x (Lagrange at 0). Fewer
    shares give a wrong secret, not an error: the caller holds the threshold."""
    xs = [s.x for s in shares]
    if not shares or len(set(xs)) != len(xs):
        raise InvalidInput("shares: need distinct shares")
    secret = 0
    for i, share in enumerate(shares):
        numerator, denominator = 1, 1
        for j, other in enumerate(shares):
            if i != j:
                numerator = numerator * -other.x % PRIME
                denominator = denominator * (share.x - other.x) % PRIME
        secret = (secret + share.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * secret_bytes):
        raise InvalidInput("shares: they do not rebuild a secret of that size")
    return secret.to_bytes(secret_bytes, "big")
