"""Keys, signed requests, tokens, roles and the audit chain."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgefleet.errors import Forbidden, SettingsError, Unauthenticated
from edgefleet.security.audit import AuditRecord, chain_record, verify_chain
from edgefleet.security.keys import DeviceKey, device_id_for
from edgefleet.security.rbac import ROLE_PERMISSIONS, Permission, Role, require
from edgefleet.security.request_signing import (
    HEADER_NONCE,
    read_signed_headers,
    sign_request,
    verify_signed_request,
)
from edgefleet.security.tokens import hash_secret, new_secret

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_key_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    key = DeviceKey.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert DeviceKey.load_or_create(path).public_key_b64 == key.public_key_b64


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    DeviceKey.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        DeviceKey.load_or_create(path)


def test_device_id_is_derived_from_the_key() -> None:
    key = DeviceKey.generate()
    assert device_id_for(key.public_key_b64) == device_id_for(key.public_key_b64)
    assert device_id_for(key.public_key_b64) != device_id_for(DeviceKey.generate().public_key_b64)


def signed(key: DeviceKey, body: bytes = b'{"a":1}', target: str = "/v1/x") -> dict[str, str]:
    return sign_request(key, "POST", target, body, device_id_for(key.public_key_b64), NOW)


def test_signature_verifies_and_each_field_is_covered() -> None:
    key = DeviceKey.generate()
    headers = signed(key)
    request = read_signed_headers(headers)
    verify_signed_request(request, key.public_key_b64, "POST", "/v1/x", b'{"a":1}', NOW)
    for method, target, body in [
        ("PUT", "/v1/x", b'{"a":1}'),
        ("POST", "/v1/y", b'{"a":1}'),
        ("POST", "/v1/x?wait=1", b'{"a":1}'),
        ("POST", "/v1/x", b'{"a":2}'),
    ]:
        with pytest.raises(Unauthenticated, match="does not verify"):
            verify_signed_request(request, key.public_key_b64, method, target, body, NOW)
    other = DeviceKey.generate()
    with pytest.raises(Unauthenticated):
        verify_signed_request(request, other.public_key_b64, "POST", "/v1/x", b'{"a":1}', NOW)


def test_stale_and_malformed_headers() -> None:
    key = DeviceKey.generate()
    request = read_signed_headers(signed(key))
    later = NOW + timedelta(seconds=301)
    with pytest.raises(Unauthenticated) as stale:
        verify_signed_request(request, key.public_key_b64, "POST", "/v1/x", b'{"a":1}', later)
    assert stale.value.code == "stale_request"
    headers = signed(key)
    with pytest.raises(Unauthenticated, match="missing header"):
        read_signed_headers({k: v for k, v in headers.items() if k != HEADER_NONCE})
    with pytest.raises(Unauthenticated, match="URL-safe"):
        read_signed_headers({**headers, HEADER_NONCE: "short"})


def test_every_request_gets_a_fresh_nonce() -> None:
    key = DeviceKey.generate()
    nonces = {signed(key)[HEADER_NONCE] for _ in range(100)}
    assert len(nonces) == 100


def test_secrets_are_random_and_hashed() -> None:
    a, b = new_secret("efa_"), new_secret("efa_")
    assert a != b and a.startswith("efa_")
    assert hash_secret(a) != a and len(hash_secret(a)) == 64


def test_roles_are_nested_least_privilege() -> None:
    nested = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)
    viewer, operator, admin = (ROLE_PERMISSIONS[r] for r in nested)
    assert viewer < operator < admin
    assert all(not p.value.endswith(".write") for p in viewer)
    require(Role.ADMIN, Permission.API_TOKENS_WRITE)
    with pytest.raises(Forbidden, match=r"role 'operator' lacks permission 'api-tokens\.write'"):
        require(Role.OPERATOR, Permission.API_TOKENS_WRITE)


def chain(n: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for i in range(n):
        previous = records[-1] if records else None
        at = (NOW + timedelta(seconds=i)).isoformat()
        records.append(
            chain_record(
                previous, at, "admin", "device.approve", f"device/{i}", f"req-{i:08d}", {"i": i}
            )
        )
    return records


def test_intact_chain_verifies() -> None:
    verdict = verify_chain(chain(5))
    assert verdict.ok and verdict.count == 5 and verdict.head_seq == 5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actor", "mallory"),
        ("action", "device.reject"),
        ("target", "device/x"),
        ("details", {"i": 99}),
        ("at", "2020-01-01T00:00:00Z"),
        ("request_id", "forged-000"),
    ],
)
def test_any_edited_field_is_detected(field: str, value: Any) -> None:
    records = chain(5)
    records[2] = replace(records[2], **{field: value})
    verdict = verify_chain(records)
    assert not verdict.ok and verdict.broken_seq == 3
    assert "altered" in (verdict.problem or "")


def test_rehashed_edit_breaks_the_next_link() -> None:
    records = chain(5)
    forged = chain_record(records[1], records[2].at, "mallory", "x", "y", "r", {})
    records[2] = forged
    verdict = verify_chain(records)
    assert not verdict.ok and verdict.broken_seq == 4
    assert "does not link" in (verdict.problem or "")


def test_deleted_record_and_truncation() -> None:
    records = chain(5)
    verdict = verify_chain(records[:2] + records[3:])
    assert not verdict.ok and "record 3 is missing" in (verdict.problem or "")
    anchor = (5, records[4].hash)
    assert verify_chain(records, anchor=anchor).ok
    truncated = verify_chain(records[:4], anchor=anchor)
    assert not truncated.ok and "truncated" in (truncated.problem or "")
    rewritten = verify_chain([*chain(5)[:4], replace(records[4], hash="0" * 64)], anchor=anchor)
    assert not rewritten.ok
