"""The device's half of a secure-aggregation round (secure_round.py has the protocol):
Shamir shares of its secrets for the others, its masked input, and what it reveals.
Encryption of the shares and key agreement are the caller's (security.secure_aggregation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from edgefleet.core.learning.ring import Ring, expand_mask
from edgefleet.core.learning.shamir import SHARE_BYTES, Share, split_secret
from edgefleet.errors import InvalidInput

PAIR_PLAINTEXT_BYTES = 2 * SHARE_BYTES  # b-share || s_sk-share


def share_secrets(
    self_seed: bytes,
    mask_secret: bytes,
    recipients: Sequence[str],
    threshold: int,
    entropy: Callable[[int], bytes],
) -> dict[str, bytes]:
    """For each recipient (U1, the sender included), the plaintext it will hold: its share
    of the self-mask seed b_u and its share of the mask key s_sk_u."""
    ordered = sorted(recipients)
    b = split_secret(self_seed, threshold, len(ordered), entropy)
    s = split_secret(mask_secret, threshold, len(ordered), entropy)
    return {v: b[i].to_bytes() + s[i].to_bytes() for i, v in enumerate(ordered)}


def mask_input(
    update: Ring, me: str, self_seed: bytes, pair_seeds: Mapping[str, bytes], ring_bits: int
) -> Ring:
    """y = x + PRG(b) + sum over the others v in U2 of sign(me, v) * PRG(s_{me,v})."""
    modulus = 1 << ring_bits
    y = (update + expand_mask(self_seed, update.size, ring_bits)) % modulus
    for v, seed in sorted(pair_seeds.items()):
        if v == me:
            continue
        sign = 1 if me < v else -1
        y = (y + sign * expand_mask(seed, update.size, ring_bits)) % modulus
    return y


def reveal_shares(
    me: str,
    held: Mapping[str, bytes],
    u2: Sequence[str],
    u3: Sequence[str],
    threshold: int,
) -> dict[str, bytes]:
    """For every v in U2, the share `me` holds of b_v (v in U3) or of s_sk_v (v dropped).
    Refuses when U3 is below the threshold or not within U2: unmasking then could expose
    one client's update (the plane asking for both shares of one v is impossible here)."""
    survivors, senders = set(u3), set(u2)
    if len(survivors) < threshold or not survivors <= senders or me not in survivors:
        raise InvalidInput("unmask: the survivors are not a valid set for this round")
    revealed = {}
    for v in sorted(senders):
        plaintext = held.get(v)
        if plaintext is None or len(plaintext) != PAIR_PLAINTEXT_BYTES:
            raise InvalidInput(f"unmask: no share held for {v}")
        share = plaintext[:SHARE_BYTES] if v in survivors else plaintext[SHARE_BYTES:]
        Share.from_bytes(share)
        revealed[v] = share
    return revealed
