"""AK certification structures: TPMT_PUBLIC, names, MakeCredential and EK certificates.

The credential is checked twice against the real thing: byte for byte against
`tpm2_makecredential -T none` (same seed: the test holds the "EK" private key and opens
the tool's seed), and by a software TPM (swtpm) opening it with `tpm2_activatecredential`.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from edgefleet.security.tpm_credential import (
    AK_REQUIRED,
    MalformedPublic,
    ObjectAttributes,
    attestation_key_problem,
    ek_certificate_problem,
    load_ek_certificate,
    make_credential,
    parse_public,
)
from tests.swtpm import swtpm, tpm2

# fixedTPM fixedParent sensitiveDataOrigin adminWithPolicy restricted decrypt
EK_ATTRIBUTES = 0x000300B2
SECRET = bytes(range(32))


def rsa_public(key: rsa.RSAPublicKey, attributes: int, *, ek: bool = False) -> bytes:
    """A TPM2B_PUBLIC for `key` (an EK: AES-128-CFB, no scheme; else RSASSA-SHA256)."""
    n = key.public_numbers().n.to_bytes(256)
    params = (struct.pack(">HHH", 0x0006, 128, 0x0043) + struct.pack(">H", 0x0010) if ek else
              struct.pack(">H", 0x0010) + struct.pack(">HH", 0x0014, 0x000B))  # fmt: skip
    body = (struct.pack(">HHI", 0x0001, 0x000B, attributes) + struct.pack(">H", 0) + params
            + struct.pack(">HI", 2048, 0) + struct.pack(">H", len(n)) + n)  # fmt: skip
    return struct.pack(">H", len(body)) + body


def pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def test_an_attestation_key_with_its_name_key_and_attributes_passes(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    ak = parse_public(rsa_public(rsa_key.public_key(), AK_REQUIRED))
    assert ak.name[:2] == b"\x00\x0b" and len(ak.name) == 34
    assert attestation_key_problem(ak, ak.name, pem(rsa_key.public_key())) is None
    assert ak.key_pem() == pem(rsa_key.public_key())


@pytest.mark.parametrize(
    ("attributes", "problem"),
    [
        (AK_REQUIRED & ~ObjectAttributes.RESTRICTED, "the attestation key is not restricted"),
        (
            AK_REQUIRED & ~ObjectAttributes.FIXED_TPM & ~ObjectAttributes.FIXED_PARENT,
            "the attestation key is not fixedTPM, fixedParent",
        ),
        (
            AK_REQUIRED & ~ObjectAttributes.SENSITIVE_DATA_ORIGIN,
            "the attestation key is not sensitiveDataOrigin",
        ),
        (AK_REQUIRED & ~ObjectAttributes.SIGN_ENCRYPT, "the attestation key is not sign"),
        (
            AK_REQUIRED | ObjectAttributes.DECRYPT,
            "the attestation key can decrypt (an attestation key only signs)",
        ),
    ],
)
def test_an_attestation_key_without_the_attributes_of_one_is_refused(
    rsa_key: rsa.RSAPrivateKey, attributes: int, problem: str
) -> None:
    ak = parse_public(rsa_public(rsa_key.public_key(), attributes))
    assert attestation_key_problem(ak, ak.name, pem(rsa_key.public_key())) == problem


def test_a_name_or_pem_that_is_not_the_keys_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    ak = parse_public(rsa_public(rsa_key.public_key(), AK_REQUIRED))
    other = rsa.generate_private_key(65537, 2048).public_key()
    wrong_name = ak.name[:-1] + bytes([ak.name[-1] ^ 1])
    assert attestation_key_problem(ak, wrong_name, pem(rsa_key.public_key())) == (
        "the attestation key's name is not nameAlg || H(its TPMT_PUBLIC)")  # fmt: skip
    assert attestation_key_problem(ak, ak.name, pem(other)) == (
        "the attestation key's TPMT_PUBLIC holds another key than its PEM")  # fmt: skip
    assert attestation_key_problem(ak, ak.name, b"not a pem") == (
        "the attestation key's PEM is not a public key")  # fmt: skip


def test_malformed_public_areas_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    good = rsa_public(rsa_key.public_key(), AK_REQUIRED)
    with pytest.raises(MalformedPublic, match="truncated"):
        parse_public(good[2:100])
    with pytest.raises(MalformedPublic, match="trailing"):
        parse_public(good[2:] + b"\0")
    with pytest.raises(MalformedPublic, match="unsupported key type"):
        parse_public(b"\x00\x08" + good[4:])
    with pytest.raises(MalformedPublic, match="hash algorithm"):
        parse_public(good[2:4] + b"\x00\x99" + good[6:])


def test_make_credential_is_what_tpm2_makecredential_writes_byte_for_byte(
    rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    """The same EK (one whose private key the test holds), AK name and secret: after
    opening the tool's seed with the EK's private key, our credential with that seed is the
    tool's file byte for byte but for the OAEP ciphertext (randomised), which opens to the
    same seed."""
    if shutil.which("tpm2_makecredential") is None:
        pytest.skip("needs tpm2-tools (tpm2_makecredential); apt-get install tpm2-tools")
    ek_bytes = rsa_public(rsa_key.public_key(), EK_ATTRIBUTES, ek=True)
    ak = parse_public(rsa_public(rsa.generate_private_key(65537, 2048).public_key(), AK_REQUIRED))
    (tmp_path / "ek.pub").write_bytes(ek_bytes)
    (tmp_path / "secret").write_bytes(SECRET)
    subprocess.run(["tpm2_makecredential", "-T", "none", "-u", "ek.pub", "-s", "secret",
                    "-n", ak.name.hex(), "-o", "cred"],
                   cwd=tmp_path, check=True, capture_output=True)  # fmt: skip
    theirs = (tmp_path / "cred").read_bytes()
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"IDENTITY\0")
    seed = rsa_key.decrypt(theirs[-256:], oaep)
    ours = make_credential(parse_public(ek_bytes), ak.name, SECRET, seed)
    assert len(ours) == len(theirs) == 8 + 2 + 68 + 2 + 256
    assert ours[:-256] == theirs[:-256]
    assert rsa_key.decrypt(ours[-256:], oaep) == seed


@dataclass(frozen=True)
class TpmKeys:
    tcti: str
    work: Path
    ek: bytes  # TPM2B_PUBLIC
    ak: bytes
    ak_name: bytes
    ak_pem: bytes


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TpmKeys]:
    """A software TPM with an EK and an AK made by tpm2-tools (loaded as ek.ctx, ak.ctx)."""
    root = tmp_path_factory.mktemp("tpm")
    with swtpm(root / "state") as tcti:
        work = root / "work"
        work.mkdir()
        tpm2(tcti, "tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub", cwd=work)
        tpm2(tcti, "tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256",
             "-s", "rsassa", "-u", "ak.pub", "-f", "tss", "-n", "ak.name", cwd=work)  # fmt: skip
        # Without a resource manager both stay loaded, filling the TPM's object slots.
        tpm2(tcti, "tpm2_flushcontext", "-t", cwd=work)
        tpm2(tcti, "tpm2_readpublic", "-c", "ak.ctx", "-f", "pem", "-o", "ak.pem", cwd=work)
        yield TpmKeys(tcti, work, (work / "ek.pub").read_bytes(), (work / "ak.pub").read_bytes(),
                      (work / "ak.name").read_bytes(), (work / "ak.pem").read_bytes())  # fmt: skip


def activate(tpm: TpmKeys, credential: bytes) -> bytes:
    """What the TPM's tpm2_activatecredential makes of `credential` (the EK's policy
    session: PolicySecret on the endorsement hierarchy)."""
    (tpm.work / "cred").write_bytes(credential)
    (tpm.work / "out").unlink(missing_ok=True)
    tpm2(tpm.tcti, "tpm2_startauthsession", "--policy-session", "-S", "session.ctx",
         cwd=tpm.work)  # fmt: skip
    try:
        tpm2(tpm.tcti, "tpm2_policysecret", "-S", "session.ctx", "-c", "e", cwd=tpm.work)
        tpm2(tpm.tcti, "tpm2_activatecredential", "-c", "ak.ctx", "-C", "ek.ctx", "-i", "cred",
             "-o", "out", "-P", "session:session.ctx", cwd=tpm.work)  # fmt: skip
    finally:
        tpm2(tpm.tcti, "tpm2_flushcontext", "session.ctx", cwd=tpm.work)
        tpm2(tpm.tcti, "tpm2_flushcontext", "-t", cwd=tpm.work)
    return (tpm.work / "out").read_bytes()


def test_a_real_tpm_opens_our_credential_for_its_own_attestation_key(tpm: TpmKeys) -> None:
    ak = parse_public(tpm.ak)
    assert ak.name == tpm.ak_name
    assert attestation_key_problem(ak, tpm.ak_name, tpm.ak_pem) is None
    assert activate(tpm, make_credential(parse_public(tpm.ek), tpm.ak_name, SECRET)) == SECRET
    # The tool's own credential opens the same way (the session form above is the one
    # tpm2-tools 5 needs for the EK's policy).
    (tpm.work / "secret").write_bytes(SECRET)
    subprocess.run(["tpm2_makecredential", "-T", "none", "-u", "ek.pub", "-s", "secret",
                    "-n", tpm.ak_name.hex(), "-o", "tool.cred"],
                   cwd=tpm.work, check=True, capture_output=True)  # fmt: skip
    assert activate(tpm, (tpm.work / "tool.cred").read_bytes()) == SECRET


def test_a_real_tpm_cannot_open_a_credential_for_another_key_or_another_ek(
    tpm: TpmKeys, rsa_key: rsa.RSAPrivateKey
) -> None:
    other_ak = parse_public(rsa_public(rsa_key.public_key(), AK_REQUIRED))
    with pytest.raises(subprocess.CalledProcessError):
        activate(tpm, make_credential(parse_public(tpm.ek), other_ak.name, SECRET))
    other_ek = parse_public(rsa_public(rsa_key.public_key(), EK_ATTRIBUTES, ek=True))
    with pytest.raises(subprocess.CalledProcessError):
        activate(tpm, make_credential(other_ek, tpm.ak_name, SECRET))


def certificate(subject: str, key: rsa.RSAPublicKey, issuer: str, signer: rsa.RSAPrivateKey,
                *, days: int = 365, ca: bool = False) -> x509.Certificate:  # fmt: skip
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


def test_an_ek_certificate_must_hold_the_ek_and_come_from_a_trusted_ca(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    ek = parse_public(rsa_public(rsa_key.public_key(), EK_ATTRIBUTES, ek=True))
    ca_key, rogue_key = (rsa.generate_private_key(65537, 2048) for _ in range(2))
    ca = certificate("TPM CA", ca_key.public_key(), "TPM CA", ca_key, ca=True)
    now = datetime.now(UTC)
    good = certificate("ek", rsa_key.public_key(), "TPM CA", ca_key)
    assert ek_certificate_problem(good, ek, [ca], now) is None
    # A rogue CA of the same name, or none trusted at all.
    forged = certificate("ek", rsa_key.public_key(), "TPM CA", rogue_key)
    problem = "the EK certificate's issuer (CN=TPM CA) is not a trusted TPM manufacturer CA"
    assert ek_certificate_problem(forged, ek, [ca], now) == problem
    assert ek_certificate_problem(good, ek, [], now) == problem
    other = certificate("ek", rogue_key.public_key(), "TPM CA", ca_key)
    assert ek_certificate_problem(other, ek, [ca], now) == (
        "the EK certificate is for another key than the endorsement key sent")  # fmt: skip
    assert "is not valid now" in str(
        ek_certificate_problem(good, ek, [ca], now + timedelta(days=400))
    )
    # Without trusted CAs only the key is checked.
    assert ek_certificate_problem(forged, ek, None, now) is None
    assert ek_certificate_problem(other, ek, None, now) is not None
    # NV indexes may be larger than the certificate: the padding is ignored.
    der = good.public_bytes(serialization.Encoding.DER)
    assert load_ek_certificate(der + bytes(100)) == good
