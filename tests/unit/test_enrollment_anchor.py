"""What a device keeps at enrollment when a root is pinned out of band (`--root-file`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from edgefleet.errors import InvalidInput, Unauthenticated
from edgefleet.security.tuf_client import TufClient
from edgefleet.security.tuf_keys import generate_signing_key
from edgefleet.security.tuf_metadata import RoleKeys, build_next_root, build_root, sign_metadata

EXPIRES = datetime(2100, 1, 1, tzinfo=UTC)


def first_root() -> tuple[bytes, Any]:
    key = generate_signing_key()
    roles = RoleKeys((key.public_key,))
    unsigned = build_root(root=roles, targets=roles, snapshot=roles, timestamp=roles,
                          expires=EXPIRES)  # fmt: skip
    return sign_metadata(unsigned, key), key


def rotated(root: bytes, old_key: Any) -> tuple[bytes, Any]:
    new_key = generate_signing_key()
    unsigned = build_next_root(root, expires=EXPIRES, root=RoleKeys((new_key.public_key,)))
    return sign_metadata(sign_metadata(unsigned, old_key), new_key), new_key


def refusal(handed: bytes, pinned: bytes, rotations: list[bytes]) -> str:
    with pytest.raises(Unauthenticated) as refused:
        TufClient.enrollment_anchor(handed, pinned, rotations)
    assert refused.value.code == "tuf_root_not_pinned"
    return refused.value.message


def test_without_a_pinned_root_the_handed_root_is_kept() -> None:
    v1, _ = first_root()
    assert TufClient.enrollment_anchor(v1, None) == v1


def test_the_pinned_root_itself_or_a_chain_from_it_is_kept() -> None:
    v1, k1 = first_root()
    v2, k2 = rotated(v1, k1)
    v3, _ = rotated(v2, k2)
    assert TufClient.enrollment_anchor(v1, v1) == v1
    assert TufClient.enrollment_anchor(v3, v1, [v2, v3]) == v3
    assert TufClient.enrollment_anchor(v3, v2, [v2, v3]) == v3
    assert TufClient.enrollment_anchor(None, v1) == v1  # the control plane has no root yet


def test_a_root_that_does_not_chain_from_the_pinned_one_is_refused() -> None:
    v1, k1 = first_root()
    v2, k2 = rotated(v1, k1)
    v3, _ = rotated(v2, k2)
    other, _ = first_root()
    assert "not the pinned one" in refusal(other, v1, [])
    assert "did not hand over root v2" in refusal(v3, v1, [v3])
    assert "older than the pinned v2" in refusal(v1, v2, [v2])
    assert "signed by 0/1 keys of root v1" in refusal(v2, other, [v2])
    forged, _ = rotated(v2, generate_signing_key())  # v3 signed by a key v2 does not name
    assert "signed by 0/1 keys of root v2" in refusal(forged, v1, [v2, forged])


def test_a_pinned_file_that_is_not_a_root_is_invalid_input() -> None:
    v1, _ = first_root()
    with pytest.raises(InvalidInput):
        TufClient.enrollment_anchor(v1, b"{}")
