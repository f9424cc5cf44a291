"""Signed desired state: the control plane signs each device's document, the device checks
it against the fleet's root of trust before acting on it.

The key is the control plane's online **timestamp** key, the one the operators' root
names for the `timestamp` role (with its threshold). So the signature chains to the
operators' root like the rest of the TUF metadata, a device needs no other key, and
rotating the online key is a root rotation the devices already follow. What the online key
can and cannot do is the point of the design: a document says *which* signed releases to
install and run and with which declared parameters; the programs, their arguments and
their bounds come only from targets metadata signed offline by the operators' keys. The
signature stops a man in the middle (plain HTTP, a broker, a gateway) from rewriting or
replaying documents; a compromised control plane can still choose among signed releases,
never run something unsigned.

Wire form: the document's exact JSON bytes, and beside them (the HTTP header
`X-Edgefleet-Desired-Signature`, an MQTT user property) one or more `KEYID:SIGHEX`
separated by commas; each an Ed25519 signature over ``EDGEFLEET-DESIRED-V1\\n`` + the
bytes (the prefix keeps these signatures apart from TUF metadata signed by the same key).
A device accepts a document when signatures of `threshold` distinct keys of the role
verify, the document names this device, and its `generation` is not older than the one
it applied last (an old document cannot be replayed).

Signing (server) takes a securesystemslib signer; verifying (device) needs only the
root's JSON and the host's libcrypto, so the agent does not load python-tuf for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from edgefleet.errors import EdgefleetError
from edgefleet.security.libcrypto import ed25519_verify

HEADER = "x-edgefleet-desired-signature"
CONTEXT = b"EDGEFLEET-DESIRED-V1\n"
ROLE = "timestamp"
MAX_SIGNATURES = 8


class DesiredStateRefused(EdgefleetError):
    """A desired-state document this device will not act on (unsigned, badly signed, for
    another device, or older than the one it applied)."""

    code = "desired_state_refused"


class _Signature(Protocol):
    keyid: str
    signature: str


class DocumentSigner(Protocol):
    def sign(self, payload: bytes) -> Any: ...


def sign_desired(body: bytes, signer: DocumentSigner) -> str:
    """The header value that signs `body` with `signer` (a securesystemslib Signer)."""
    signature: _Signature = signer.sign(CONTEXT + body)
    return f"{signature.keyid}:{signature.signature}"


@dataclass(frozen=True)
class DesiredStateKeys:
    """The keys (key id -> raw Ed25519 public key) and threshold a document needs."""

    keys: Mapping[str, bytes]
    threshold: int

    @classmethod
    def from_root(cls, root: bytes) -> DesiredStateKeys:
        """The `timestamp` role of a TUF root (JSON bytes); DesiredStateRefused if it is
        not one this module can read."""
        try:
            signed = json.loads(root)["signed"]
            role = signed["roles"][ROLE]
            threshold = int(role["threshold"])
            keys = {}
            for keyid in role["keyids"]:
                key = signed["keys"][keyid]
                if key.get("keytype") == "ed25519" and key.get("scheme") == "ed25519":
                    keys[str(keyid)] = bytes.fromhex(key["keyval"]["public"])
        except (ValueError, KeyError, TypeError) as e:
            raise DesiredStateRefused(f"the trusted root cannot be read: {e}") from None
        if threshold < 1:
            raise DesiredStateRefused("the trusted root's timestamp threshold is below 1")
        return cls(keys, threshold)


def verify_desired(
    body: bytes,
    signatures: str | None,
    keys: DesiredStateKeys,
    device_id: str,
    applied_generation: int,
) -> dict[str, Any]:
    """The document in `body` once its signatures, device and generation check out."""
    if not signatures:
        raise DesiredStateRefused("the desired state is not signed")
    entries = signatures.split(",")
    if len(entries) > MAX_SIGNATURES:
        raise DesiredStateRefused(f"more than {MAX_SIGNATURES} signatures")
    payload = CONTEXT + body
    good: set[str] = set()
    unknown: list[str] = []
    for entry in entries:
        keyid, _, signature_hex = entry.strip().partition(":")
        public = keys.keys.get(keyid)
        if public is None:
            unknown.append(keyid[:16])
            continue
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            continue
        if ed25519_verify(public, signature, payload):
            good.add(keyid)
    if len(good) < keys.threshold:
        why = f"by unknown key {unknown[0]}" if unknown and not good else "badly"
        raise DesiredStateRefused(
            f"the desired state is signed {why}: {len(good)} of {keys.threshold} required "
            "signatures of the fleet's online key verify",
            code="desired_unknown_key" if unknown and not good else "desired_bad_signature",
        )
    return read_document(body, device_id, applied_generation)


def read_document(body: bytes, device_id: str, applied_generation: int) -> dict[str, Any]:
    """The document in `body` if it is for `device_id` and not older than the applied
    generation (checked for signed documents, and for the unsigned ones a device without a
    root takes)."""
    try:
        document = json.loads(body)
    except ValueError:
        raise DesiredStateRefused("the desired state is not JSON") from None
    if not isinstance(document, dict) or document.get("device_id") != device_id:
        raise DesiredStateRefused("the desired state is for another device")
    generation = document.get("generation")
    if isinstance(generation, bool) or not isinstance(generation, int):
        raise DesiredStateRefused("the desired state has no generation")
    if generation < applied_generation:
        raise DesiredStateRefused(
            f"generation {generation} is older than the applied {applied_generation}: "
            "an old document replayed",
            code="desired_replayed",
        )
    return document
