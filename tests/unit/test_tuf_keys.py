from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from edgefleet.errors import InvalidInput, SettingsError
from edgefleet.security.tuf_keys import (
    generate_signing_key,
    load_or_create_signing_key,
    load_public_key,
    load_signing_key,
    public_key_from_dict,
    public_key_path,
    public_key_to_dict,
    save_signing_key,
)


def test_generated_key_round_trips_through_files(tmp_path: Path) -> None:
    signer = generate_signing_key()
    public_path = save_signing_key(signer, tmp_path / "root.key")
    assert public_path == public_key_path(tmp_path / "root.key")
    assert stat.S_IMODE(os.stat(tmp_path / "root.key").st_mode) == 0o600

    loaded = load_signing_key(tmp_path / "root.key")
    assert loaded.public_key == signer.public_key
    assert load_public_key(public_path) == signer.public_key
    signature = loaded.sign(b"payload")
    signer.public_key.verify_signature(signature, b"payload")


def test_public_key_file_is_tuf_key_json(tmp_path: Path) -> None:
    signer = generate_signing_key()
    public_path = save_signing_key(signer, tmp_path / "targets.key")
    document = json.loads(public_path.read_text())
    assert document["keyid"] == signer.public_key.keyid
    assert document["keytype"] == "ed25519"
    assert "private" not in json.dumps(document)


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    save_signing_key(generate_signing_key(), tmp_path / "k")
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        load_signing_key(tmp_path / "k")


def test_missing_or_garbage_key_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_signing_key(tmp_path / "absent")
    (tmp_path / "junk").write_bytes(b"not a key")
    os.chmod(tmp_path / "junk", 0o600)
    with pytest.raises(SettingsError, match="not an unencrypted PEM key"):
        load_signing_key(tmp_path / "junk")


def test_server_keys_are_created_once(tmp_path: Path) -> None:
    first = load_or_create_signing_key(tmp_path / "tuf" / "timestamp.key")
    again = load_or_create_signing_key(tmp_path / "tuf" / "timestamp.key")
    assert first.public_key == again.public_key


def test_public_key_dict_validation() -> None:
    key = generate_signing_key().public_key
    assert public_key_from_dict(public_key_to_dict(key)) == key
    ed25519 = {"keyid": "x", "keytype": "ed25519", "scheme": "ed25519"}
    for bad in (
        {},
        {"keyid": "x"},
        {**ed25519, "keyval": {}},
        {**ed25519, "keyval": {"public": "zz"}},
        {**ed25519, "keytype": "rsa", "keyval": {"public": "ab" * 32}},
    ):
        with pytest.raises(InvalidInput):
            public_key_from_dict(bad)
