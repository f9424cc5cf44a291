"""Certifying a TPM attestation key (AK) by credential activation, with `cryptography` alone.

A quote proves only that *some* key signed it. To know the AK lives in a real TPM, and in
which one, the control plane encrypts a secret to the TPM's endorsement key (EK) bound to
the AK's name (TPM2_MakeCredential, done here in Python); only the TPM holding both the EK
and a key of that name can decrypt it (TPM2_ActivateCredential, `tpm2_activatecredential`
on the device). The EK itself is vouched for by its manufacturer's certificate (read from
NV index 0x01c00002), checked against the TPM CAs the operator trusts.

    TPM2B_PUBLIC   = size u16 | TPMT_PUBLIC
    TPMT_PUBLIC    = type u16 | nameAlg u16 | objectAttributes u32 | authPolicy TPM2B
                   | parameters (RSA: symmetric, scheme, keyBits u16, exponent u32;
                                 ECC: symmetric, scheme, curveID u16, kdf)
                   | unique (RSA: modulus TPM2B; ECC: x TPM2B, y TPM2B)
    name           = nameAlg u16 || H_nameAlg(TPMT_PUBLIC)

    MakeCredential (TPM 2.0 Part 1, 24; the EK's nameAlg H and symmetric key):
      seed             random, |H| bytes
      encryptedSecret  RSA-OAEP(EK, seed, H, label "IDENTITY\\0")
      symKey           KDFa(H, seed, "STORAGE", AK name, "", keyBits)
      encIdentity      AES-CFB(symKey, IV 0, TPM2B_DIGEST(secret))
      hmacKey          KDFa(H, seed, "INTEGRITY", "", "", |H| bits)
      integrity        HMAC_H(hmacKey, encIdentity || AK name)

    credential file (what tpm2_makecredential writes and tpm2_activatecredential reads)
      = 0xBADCC0DE u32 | version 1 u32
      | TPM2B_ID_OBJECT (size u16 | integrity TPM2B | encIdentity)
      | TPM2B_ENCRYPTED_SECRET (size u16 | encryptedSecret)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntFlag

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from edgefleet.security.tpm_quote import TpmReader

TPM_ALG_RSA = 0x0001
TPM_ALG_AES = 0x0006
TPM_ALG_NULL = 0x0010
TPM_ALG_ECC = 0x0023
TPM_ALG_CFB = 0x0043
TPM_ALG_ECDAA = 0x001A
TPM_ECC_NIST_P256 = 0x0003
CREDENTIAL_MAGIC = 0xBADCC0DE
CREDENTIAL_VERSION = 1

_HASHES: dict[int, tuple[str, type[hashes.HashAlgorithm]]] = {
    0x0004: ("sha1", hashes.SHA1),
    0x000B: ("sha256", hashes.SHA256),
    0x000C: ("sha384", hashes.SHA384),
    0x000D: ("sha512", hashes.SHA512),
}


class MalformedPublic(ValueError):
    """The bytes are not a TPM2B_PUBLIC this module understands."""


class ObjectAttributes(IntFlag):
    """TPMA_OBJECT bits that matter here."""

    FIXED_TPM = 0x00000002
    FIXED_PARENT = 0x00000010
    SENSITIVE_DATA_ORIGIN = 0x00000020
    RESTRICTED = 0x00010000
    DECRYPT = 0x00020000
    SIGN_ENCRYPT = 0x00040000


# An attestation key: created in this TPM, never duplicated out of it, signing only what the
# TPM itself produced (restricted), never decrypting.
AK_REQUIRED = (
    ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.RESTRICTED
    | ObjectAttributes.SIGN_ENCRYPT
)
_AK_ATTRIBUTE_NAMES = {
    ObjectAttributes.FIXED_TPM: "fixedTPM",
    ObjectAttributes.FIXED_PARENT: "fixedParent",
    ObjectAttributes.SENSITIVE_DATA_ORIGIN: "sensitiveDataOrigin",
    ObjectAttributes.RESTRICTED: "restricted",
    ObjectAttributes.SIGN_ENCRYPT: "sign",
}


@dataclass(frozen=True)
class TpmPublic:
    """A parsed TPMT_PUBLIC: its bytes (`raw`, what the name hashes), name algorithm,
    attributes, public key and symmetric algorithm (key bits, 0 for none)."""

    raw: bytes
    name_alg: int
    attributes: ObjectAttributes
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    symmetric_bits: int

    @property
    def name(self) -> bytes:
        """nameAlg || H_nameAlg(TPMT_PUBLIC): how the TPM names the object."""
        return struct.pack(">H", self.name_alg) + _digest(self.name_alg, self.raw)

    def key_pem(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip


def _hash(alg: int) -> tuple[str, type[hashes.HashAlgorithm]]:
    try:
        return _HASHES[alg]
    except KeyError:
        raise MalformedPublic(f"unsupported hash algorithm 0x{alg:04x}") from None


def _digest(alg: int, data: bytes) -> bytes:
    return hashlib.new(_hash(alg)[0], data).digest()


def _scheme(r: TpmReader) -> None:
    scheme = r.u16()
    if scheme == TPM_ALG_ECDAA:
        raise MalformedPublic("ECDAA keys are not supported")
    if scheme != TPM_ALG_NULL:
        r.u16()  # the scheme's hash algorithm


def parse_public(data: bytes) -> TpmPublic:
    """A TPM2B_PUBLIC (`tpm2_createek -u`, `tpm2_createak -u`, tss format) or a bare
    TPMT_PUBLIC; MalformedPublic when it is neither, or not an RSA or NIST P-256 key."""
    if len(data) >= 2 and struct.unpack(">H", data[:2])[0] == len(data) - 2:
        data = data[2:]
    r = TpmReader(data, MalformedPublic)
    kind, name_alg, attributes = r.u16(), r.u16(), r.u32()
    _hash(name_alg)
    r.sized()  # authPolicy
    symmetric_bits = 0
    if (symmetric := r.u16()) != TPM_ALG_NULL:
        symmetric_bits, mode = r.u16(), r.u16()
        if symmetric != TPM_ALG_AES or mode != TPM_ALG_CFB:
            raise MalformedPublic("the only symmetric algorithm supported is AES-CFB")
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kind == TPM_ALG_RSA:
        _scheme(r)
        r.u16()  # keyBits: the modulus says it
        exponent = r.u32() or 65537
        modulus = int.from_bytes(r.sized())
        try:
            key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        except ValueError as e:
            raise MalformedPublic(f"not an RSA public key: {e}") from None
    elif kind == TPM_ALG_ECC:
        _scheme(r)
        if r.u16() != TPM_ECC_NIST_P256:
            raise MalformedPublic("the only curve supported is NIST P-256")
        _scheme(r)  # kdf
        point = b"\x04" + r.sized().rjust(32, b"\0") + r.sized().rjust(32, b"\0")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError as e:
            raise MalformedPublic(f"not a P-256 point: {e}") from None
    else:
        raise MalformedPublic(f"unsupported key type 0x{kind:04x}")
    if not r.done():
        raise MalformedPublic("trailing bytes")
    return TpmPublic(data, name_alg, ObjectAttributes(attributes), key, symmetric_bits)


def attestation_key_problem(ak: TpmPublic, name: bytes, key_pem: bytes) -> str | None:
    """Why `ak` cannot be the attestation key the device named `name` and sent as
    `key_pem` (None: it can): the name must be its own, the key the PEM's, and the
    attributes those of a restricted signing key that never leaves its TPM."""
    if not hmac.compare_digest(ak.name, name):
        return "the attestation key's name is not nameAlg || H(its TPMT_PUBLIC)"
    try:
        pem_key = serialization.load_pem_public_key(key_pem)
    except ValueError:
        return "the attestation key's PEM is not a public key"
    if pem_key != ak.key:
        return "the attestation key's TPMT_PUBLIC holds another key than its PEM"
    missing = [n for flag, n in _AK_ATTRIBUTE_NAMES.items() if flag not in ak.attributes]
    if missing:
        return f"the attestation key is not {', '.join(missing)}"
    if ObjectAttributes.DECRYPT in ak.attributes:
        return "the attestation key can decrypt (an attestation key only signs)"
    return None


def kdfa(hash_alg: int, key: bytes, label: str, context_u: bytes, context_v: bytes,
         bits: int) -> bytes:  # fmt: skip
    """KDFa of TPM 2.0 Part 1, 11.4.10.2 (SP 800-108 counter mode with HMAC); `label`
    without its terminating zero, which is added."""
    name, _ = _hash(hash_alg)
    out = b""
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        message = (struct.pack(">I", counter) + label.encode() + b"\0" + context_u
                   + context_v + struct.pack(">I", bits))  # fmt: skip
        out += hmac.new(key, message, name).digest()
    return out[: (bits + 7) // 8]


def make_credential(ek: TpmPublic, ak_name: bytes, secret: bytes,
                    seed: bytes | None = None) -> bytes:  # fmt: skip
    """The credential file for `secret` that only the TPM holding `ek` and the object named
    `ak_name` can open (`seed`: only to reproduce a known credential in tests)."""
    if not isinstance(ek.key, rsa.RSAPublicKey):
        raise MalformedPublic("the endorsement key must be an RSA key")
    if not ek.symmetric_bits or ObjectAttributes.DECRYPT not in ek.attributes:
        raise MalformedPublic("the endorsement key is not a restricted decryption key")
    name, algorithm = _hash(ek.name_alg)
    size = algorithm().digest_size
    if len(secret) > size:
        raise ValueError(f"the secret is longer than {size} bytes")
    seed = os.urandom(size) if seed is None else seed
    encrypted_seed = ek.key.encrypt(
        seed, padding.OAEP(padding.MGF1(algorithm()), algorithm(), b"IDENTITY\0"))  # fmt: skip
    sym_key = kdfa(ek.name_alg, seed, "STORAGE", ak_name, b"", ek.symmetric_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(_sized(secret)) + encryptor.finalize()
    hmac_key = kdfa(ek.name_alg, seed, "INTEGRITY", b"", b"", size * 8)
    integrity = hmac.new(hmac_key, enc_identity + ak_name, name).digest()
    id_object = _sized(_sized(integrity) + enc_identity)
    return (struct.pack(">II", CREDENTIAL_MAGIC, CREDENTIAL_VERSION) + id_object
            + _sized(encrypted_seed))  # fmt: skip


def _sized(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def load_ek_certificate(data: bytes) -> x509.Certificate:
    """The EK certificate read from NV (DER; TPMs may pad the index after it)."""
    if len(data) >= 4 and data[0] == 0x30 and data[1] == 0x82:
        data = data[: 4 + int.from_bytes(data[2:4])]
    return x509.load_der_x509_certificate(data)


def ek_certificate_problem(
    certificate: x509.Certificate,
    ek: TpmPublic,
    trusted: Sequence[x509.Certificate] | None,
    now: datetime,
) -> str | None:
    """Why `certificate` does not vouch for `ek` (None: it does): it must hold the EK's
    public key and, unless `trusted` is None (no TPM CA configured), be valid at `now` and
    be signed by one of the `trusted` TPM CAs (the manufacturers' issuing CAs)."""
    if certificate.public_key() != ek.key:
        return "the EK certificate is for another key than the endorsement key sent"
    if trusted is None:
        return None
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        since, until = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        return f"the EK certificate is not valid now (valid {since:%Y-%m-%d} to {until:%Y-%m-%d})"
    for ca in trusted:
        if ca.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError):
            continue
        return None
    return (
        f"the EK certificate's issuer ({certificate.issuer.rfc4514_string()}) is not a "
        "trusted TPM manufacturer CA"
    )
