"""core.attestation (the verdict, the policy, PCR replay) and security.tpm_quote (parsing and
checking a TPM quote) on quotes built here and signed with keys made here; the integration
tests run the same code on quotes of a real software TPM."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.governance.attestation import (
    AttestationPolicy,
    AttestationStatus,
    QuoteCheck,
    is_restricted,
    judge,
    measurement_digest,
    parse_policy,
    replay_pcr,
    slot_mismatches,
)
from edgefleet.security.tpm_quote import MalformedQuote, check_quote, parse_quote

MEASUREMENT = {"agent": {"sha256": "ab" * 32}, "slots": {}, "config": {"tpm": True}}
DIGEST = measurement_digest(MEASUREMENT)
PCR = replay_pcr([DIGEST])


def test_the_digest_is_over_canonical_json_whatever_the_key_order() -> None:
    reordered = {"config": {"tpm": True}, "slots": {}, "agent": {"sha256": "ab" * 32}}
    assert measurement_digest(reordered) == DIGEST
    assert measurement_digest({**MEASUREMENT, "slots": {"a": {}}}) != DIGEST


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=5))
def test_replay_is_a_chain_of_sha256_extends(digests: list[bytes]) -> None:
    pcr = bytes(32)
    for d in digests:
        pcr = hashlib.sha256(pcr + d).digest()
    assert replay_pcr([d.hex() for d in digests]) == pcr.hex()


def test_a_verdict_for_every_outcome() -> None:
    ok = QuoteCheck(None, {16: PCR})
    assert judge(MEASUREMENT, DIGEST, [], ok, [DIGEST]).status is AttestationStatus.VERIFIED
    plain = judge(MEASUREMENT, DIGEST, [], None, [])
    assert (plain.status, plain.reason) == (
        AttestationStatus.UNVERIFIED,
        "software measurement only (no TPM)",
    )
    cases = [
        (("0" * 64, [], ok, [DIGEST]), "is not the digest of the measurement sent"),
        ((DIGEST, ["slot a: w differs"], ok, [DIGEST]), "slot a: w differs"),
        ((DIGEST, [], QuoteCheck("bad signature", {}), [DIGEST]), "bad signature"),
        ((DIGEST, [], QuoteCheck(None, {23: PCR}), [DIGEST]), "does not cover PCR 16"),
        ((DIGEST, [], ok, ["cd" * 32]), "does not end with this measurement"),
        ((DIGEST, [], ok, ["cd" * 32, DIGEST]), "the measurement log replays to"),
    ]
    for (claimed, mismatches, quote, log), reason in cases:
        verdict = judge(MEASUREMENT, claimed, mismatches, quote, log)
        assert verdict.status is AttestationStatus.FAILED and reason in verdict.reason


def test_slots_are_compared_file_by_file_with_their_release() -> None:
    published = {("m", "1"): {"model": "aa", "service": "bb"}, ("gone", "1"): None}
    same = {"a": {"release": "m", "version": "1", "files": {"model": "aa", "service": "bb"}}}
    assert slot_mismatches(same, published) == []
    changed = {"b": {"release": "m", "version": "1", "files": {"model": "ff", "extra": "cc"}}}
    assert slot_mismatches(changed, published) == [
        "slot b: model of m 1 has sha256 ff, the release has aa",
        "slot b: service of m 1 is missing",
        "slot b: extra is not part of m 1",
    ]
    unknown = {"a": {"release": "gone", "version": "1", "files": {}}}
    assert slot_mismatches(unknown, published) == ["slot a: release gone 1 is not published"]


def test_the_policy_applies_to_failed_devices_and_with_require_tpm_to_unverified_ones() -> None:
    assert parse_policy("") == AttestationPolicy() and AttestationPolicy().report_only
    policy = parse_policy(" releases , workloads,label")
    assert (policy.withhold_releases, policy.withhold_workloads, policy.quarantine_label) == (
        True, True, True)  # fmt: skip
    with pytest.raises(ValueError, match="unknown attestation action 'reboot'"):
        parse_policy("releases,reboot")
    assert is_restricted(policy, AttestationStatus.FAILED)
    assert not is_restricted(policy, AttestationStatus.UNVERIFIED)
    assert not is_restricted(policy, None)
    strict = parse_policy("releases", require_tpm=True)
    assert is_restricted(strict, AttestationStatus.UNVERIFIED) and is_restricted(strict, None)
    assert not is_restricted(strict, AttestationStatus.VERIFIED)


# TPMS_ATTEST and TPMT_SIGNATURE, built as a TPM builds them.


def attest_message(nonce: bytes, pcrs: list[int], pcr_digest: bytes) -> bytes:
    bitmap = bytearray(3)
    for i in pcrs:
        bitmap[i // 8] |= 1 << (i % 8)
    signer = b"\x00\x0b" + bytes(32)
    return b"".join([
        struct.pack(">IH", 0xFF544347, 0x8018),
        struct.pack(">H", len(signer)), signer,
        struct.pack(">H", len(nonce)), nonce,
        struct.pack(">QIIB", 1234, 1, 0, 1), struct.pack(">Q", 0x20191023),
        struct.pack(">IHB", 1, 0x000B, 3), bytes(bitmap),
        struct.pack(">H", len(pcr_digest)), pcr_digest,
    ])  # fmt: skip


def rsa_signature(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    raw = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return struct.pack(">HHH", 0x0014, 0x000B, len(raw)) + raw


def ecdsa_signature(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    parts = [v.to_bytes(32) for v in (r, s)]
    return struct.pack(">HH", 0x0018, 0x000B) + b"".join(
        struct.pack(">H", len(p)) + p for p in parts)  # fmt: skip


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


NONCE = bytes(range(32))
VALUES = {16: PCR}
QUOTED = hashlib.sha256(bytes.fromhex(PCR)).digest()


def test_a_good_quote_checks_out_with_rsa_and_ecdsa_keys() -> None:
    message = attest_message(NONCE, [16], QUOTED)
    info = parse_quote(message)
    assert (info.nonce, info.pcrs, info.pcr_digest) == (NONCE, ((0x000B, 16),), QUOTED)
    key = rsa.generate_private_key(65537, 2048)
    assert check_quote(pem(key), message, rsa_signature(key, message), NONCE, VALUES) == (
        QuoteCheck(None, VALUES))  # fmt: skip
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert check_quote(pem(ec_key), message, ecdsa_signature(ec_key, message), NONCE,
                       VALUES).problem is None  # fmt: skip


def test_a_bad_quote_is_named() -> None:
    key = rsa.generate_private_key(65537, 2048)
    other = rsa.generate_private_key(65537, 2048)
    message = attest_message(NONCE, [16], QUOTED)
    signature = rsa_signature(key, message)
    cases = [
        (pem(other), message, signature, NONCE, VALUES, "signature is not the attestation key"),
        (pem(key), message, signature, bytes(32), VALUES, "not over the nonce"),
        (pem(key), message, signature, NONCE, {16: "00" * 32}, "do not match the quote's PCR"),
        (pem(key), message, signature, NONCE, {16: PCR, 23: PCR}, "the quote covers PCRs [16]"),
    ]
    for public, msg, sig, nonce, values, problem in cases:
        found = check_quote(public, msg, sig, nonce, values).problem
        assert found is not None and problem in found
    truncated = message[:-4]
    assert check_quote(pem(key), truncated, rsa_signature(key, truncated), NONCE,
                       VALUES).problem == "malformed quote: truncated"  # fmt: skip
    with pytest.raises(MalformedQuote):
        parse_quote(truncated)
    with pytest.raises(MalformedQuote, match="magic"):
        parse_quote(b"\x00" * 8)
