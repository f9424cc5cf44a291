"""TUF signing keys: Ed25519 key pairs for the root, targets, snapshot and timestamp roles.

A key is two files: the private key as PEM PKCS#8 (mode 0600; `edgefleet keys generate
--role root -o FILE` writes FILE) and its public half as TUF key JSON beside it
(`FILE.pub.json`: keyid, keytype, scheme, keyval), which is what operators hand to
whoever builds root metadata. Root and targets keys stay on operators' machines; the
server keeps its snapshot and timestamp keys in its data dir (`load_or_create_signing_key`).

Signers are securesystemslib `CryptoSigner`s and public keys `SSlibKey`s, the types
python-tuf signs and verifies with.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import (
    CryptoSigner,
    SSlibKey,
)

from edgefleet.atomicfile import write_atomically
from edgefleet.errors import InvalidInput, SettingsError

PUBLIC_SUFFIX = ".pub.json"


def generate_signing_key() -> CryptoSigner:
    """A new Ed25519 signer; its keyid is derived from the public key."""
    return CryptoSigner.generate_ed25519()


def public_key_path(private_key_path: Path) -> Path:
    """Where the public half of the key at `private_key_path` is written."""
    return private_key_path.with_name(private_key_path.name + PUBLIC_SUFFIX)


def save_signing_key(signer: CryptoSigner, path: Path) -> Path:
    """Write the private key to `path` (0600) and its public key JSON; return the latter."""
    write_atomically(path, signer.private_bytes, mode=0o600)
    public_path = public_key_path(path)
    save_public_key(signer.public_key, public_path)
    return public_path


def save_public_key(key: SSlibKey, path: Path) -> None:
    """Write a public key as TUF key JSON (with its keyid), mode 0644."""
    text = json.dumps(public_key_to_dict(key), indent=2, sort_keys=True) + "\n"
    write_atomically(path, text.encode())


def load_signing_key(path: Path) -> CryptoSigner:
    """Load a private key file; refuses one that other users can read, as ssh does."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        data = path.read_bytes()
    except FileNotFoundError:
        raise SettingsError(f"signing key {path} does not exist") from None
    if mode & 0o077:
        raise SettingsError(
            f"signing key {path} is accessible by other users (mode {mode:04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SettingsError(f"signing key {path} is not an unencrypted PEM key: {e}") from e
    if not isinstance(private, Ed25519PrivateKey):
        raise SettingsError(f"signing key {path} is not an Ed25519 key")
    return CryptoSigner(private)


def load_or_create_signing_key(path: Path) -> CryptoSigner:
    """Load the key at `path`, generating and saving it first when absent (server keys)."""
    if not path.exists():
        save_signing_key(generate_signing_key(), path)
    return load_signing_key(path)


def load_public_key(path: Path) -> SSlibKey:
    """Read a public key JSON file written by `save_public_key`."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f"public key {path} does not exist") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise SettingsError(f"public key {path} is not JSON: {e}") from None
    try:
        return public_key_from_dict(document)
    except InvalidInput as e:
        raise SettingsError(f"public key {path}: {e.message}") from None


def public_key_to_dict(key: SSlibKey) -> dict[str, Any]:
    """The TUF JSON form of a public key, with its keyid: what APIs and files carry."""
    return {"keyid": key.keyid, **key.to_dict()}


def public_key_from_dict(document: object) -> SSlibKey:
    """Parse `public_key_to_dict` output; only Ed25519 keys are accepted."""
    if not isinstance(document, dict) or not isinstance(document.get("keyid"), str):
        raise InvalidInput("a public key must be a JSON object with a keyid", code="invalid_key")
    fields = {k: v for k, v in document.items() if k != "keyid"}
    try:
        key = SSlibKey.from_dict(document["keyid"], fields)
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"not a TUF public key: {e}", code="invalid_key") from None
    public = key.keyval.get("public")
    if not isinstance(public, str) or not re.fullmatch(r"[0-9a-f]{64}", public):
        raise InvalidInput(f"public key {key.keyid} has no 32-byte hex value", code="invalid_key")
    if key.keytype != "ed25519" or key.scheme != "ed25519":
        raise InvalidInput(
            f"public key {key.keyid} is {key.keytype}/{key.scheme}; expected ed25519",
            code="invalid_key",
        )
    return key
