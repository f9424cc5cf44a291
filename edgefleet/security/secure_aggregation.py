"""Key agreement and share encryption for secure aggregation (core/learning/secure_round.py).

Each client makes two X25519 key pairs per round: `c` to encrypt the Shamir shares it
sends through the control plane to each other client, `s` for the pairwise mask seeds.
Every derived key is bound to the job, the round and (for share encryption) the direction
sender -> recipient with HKDF-SHA256, so a key is used for one message only and AES-GCM can
take a fixed nonce; a share replayed into another round or pair fails authentication.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edgefleet.core.learning.shamir import PRIME
from edgefleet.errors import InvalidInput

_NONCE = bytes(12)


@dataclass(frozen=True)
class RoundKeys:
    """A client's secrets for one round (made from 96 bytes of fresh entropy). The top bit
    of each is cleared, so each is an element of the Shamir field (X25519 ignores that bit)."""

    c_sk: bytes
    s_sk: bytes
    self_seed: bytes

    @classmethod
    def from_entropy(cls, entropy: bytes) -> RoundKeys:
        if len(entropy) != 96:
            raise InvalidInput("round keys: expected 96 bytes of entropy")
        c_sk, s_sk, seed = (_field_element(entropy[i : i + 32]) for i in (0, 32, 64))
        return cls(c_sk, s_sk, seed)

    def public(self) -> dict[str, bytes]:
        return {"c_pk": public_key(self.c_sk), "s_pk": public_key(self.s_sk)}


def _field_element(secret: bytes) -> bytes:
    value = int.from_bytes(secret, "big") & ((1 << 255) - 1)
    if value >= PRIME:  # probability 2**-250
        raise InvalidInput("round keys: entropy out of the field; draw again")
    return value.to_bytes(32, "big")


def public_key(secret: bytes) -> bytes:
    return (
        X25519PrivateKey.from_private_bytes(secret)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def _agree(secret: bytes, peer_public: bytes, info: bytes) -> bytes:
    try:
        shared = X25519PrivateKey.from_private_bytes(secret).exchange(
            X25519PublicKey.from_public_bytes(peer_public)
        )
    except ValueError as e:
        raise InvalidInput(f"key agreement: {e}") from None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def mask_seed(job: str, round_number: int, s_sk: bytes, peer_s_pk: bytes) -> bytes:
    """The pairwise mask seed s_uv; the same from either side."""
    return _agree(s_sk, peer_s_pk, f"edgefleet/secagg/mask/{job}/{round_number}".encode())


def _share_key(
    job: str, round_number: int, sender: str, recipient: str, c_sk: bytes, peer_c_pk: bytes
) -> bytes:
    info = f"edgefleet/secagg/share/{job}/{round_number}/{sender}->{recipient}".encode()
    return _agree(c_sk, peer_c_pk, info)


def encrypt_share(
    job: str,
    round_number: int,
    sender: str,
    recipient: str,
    c_sk: bytes,
    recipient_c_pk: bytes,
    plaintext: bytes,
) -> bytes:
    key = _share_key(job, round_number, sender, recipient, c_sk, recipient_c_pk)
    return AESGCM(key).encrypt(_NONCE, plaintext, None)


def decrypt_share(
    job: str,
    round_number: int,
    sender: str,
    recipient: str,
    c_sk: bytes,
    sender_c_pk: bytes,
    ciphertext: bytes,
) -> bytes:
    """InvalidInput when the ciphertext was not made for this round and pair."""
    key = _share_key(job, round_number, sender, recipient, c_sk, sender_c_pk)
    try:
        return AESGCM(key).decrypt(_NONCE, ciphertext, None)
    except InvalidTag:
        raise InvalidInput(f"share from {sender}: does not authenticate") from None
