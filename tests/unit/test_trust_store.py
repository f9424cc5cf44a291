"""A signer's check of what a control plane publishes (security/trust_store.py), against a
real TufRepository; `World.served` plays the attacker who owns the server."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from edgefleet.errors import NotFound, Unauthenticated
from edgefleet.security.trust_store import PublishedMetadata, TrustStore, verify_published
from edgefleet.security.tuf_metadata import RoleKeys, build_next_root, parse_root
from tests.unit.test_tuf import NOW, PAST, World, keys, make_target, signed_by


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def anchor(world: World) -> bytes:
    return world.repo.read_metadata("1.root.json")


def verify(world: World, **floors: int) -> PublishedMetadata:
    def fetch(name: str) -> bytes | None:
        if name in world.served:
            served = world.served[name]
            assert isinstance(served, bytes)
            return served
        try:
            return world.repo.read_metadata(name)
        except NotFound:
            return None

    return verify_published(anchor(world), fetch, now=NOW, **floors)


def refused_code(world: World, **floors: int) -> str:
    with pytest.raises(Unauthenticated) as refused:
        verify(world, **floors)
    return refused.value.code


def test_before_any_release_the_root_verifies_and_no_targets_are_published(
    world: World,
) -> None:
    published = verify(world)
    assert published.root.signed.version == 1 and published.targets is None
    assert refused_code(world, min_targets_version=1) == "tuf_rollback"


def test_the_published_targets_verify_byte_for_byte(world: World) -> None:
    world.release("1.0.0", b"v1")
    world.release("2.0.0", b"v2")
    published = verify(world)
    assert published.targets_version == 2
    assert published.targets_bytes == world.repo.read_metadata("2.targets.json")


def test_a_root_rotation_is_followed_from_the_anchor(world: World) -> None:
    new_keys = keys(1)
    root = build_next_root(
        world.repo.root_bytes(),
        expires=NOW + timedelta(days=365),
        root=RoleKeys((new_keys[0].public_key,)),
    )
    world.repo.rotate_root(signed_by(root, *world.root_keys, *new_keys), now=NOW)
    assert verify(world).root.signed.version == 2
    assert refused_code(world, min_root_version=3) == "tuf_rollback"


def test_a_root_the_trusted_keys_did_not_sign_is_refused(world: World) -> None:
    root = build_next_root(world.repo.root_bytes(), expires=NOW + timedelta(days=365))
    world.served["2.root.json"] = signed_by(root, *keys(1))
    assert refused_code(world) == "tuf_unsigned"


def test_targets_the_targets_keys_did_not_sign_are_refused(world: World) -> None:
    world.release("1.0.0", b"v1")
    forged = world.repo.stage_targets(
        [make_target("6.6.6", b"evil")], expires=NOW + timedelta(days=90)
    )
    world.forge_online_metadata(signed_by(forged, *keys(2)))
    assert refused_code(world) == "tuf_unsigned"


def test_targets_that_do_not_match_the_snapshot_are_refused(world: World) -> None:
    world.release("1.0.0", b"v1")
    genuine = world.repo.read_metadata("1.targets.json")
    world.served["1.targets.json"] = genuine.replace(b"vision", b"visiom")
    assert refused_code(world) == "tuf_hash_mismatch"


def test_an_older_targets_version_than_seen_before_is_a_rollback(world: World) -> None:
    world.release("1.0.0", b"v1")
    assert refused_code(world, min_targets_version=2) == "tuf_rollback"


def test_expired_targets_still_verify_so_that_they_can_be_renewed(world: World) -> None:
    world.release("1.0.0", b"v1", now=PAST)
    world.repo.refresh_timestamp(NOW)
    published = verify(world)
    assert published.targets is not None and published.targets.signed.is_expired(NOW)


def test_expired_online_metadata_is_refused(world: World) -> None:
    world.release("1.0.0", b"v1", now=PAST)
    assert refused_code(world) == "tuf_expired"


def test_the_store_keeps_the_anchor_and_the_floors_per_server(world: World, tmp_path: Path) -> None:
    store = TrustStore.for_server(tmp_path / "config", "https://fleet.example.com")
    assert store.directory == tmp_path / "config" / "trust" / "fleet.example.com_443"
    assert store.root() is None and store.targets_version() == 0
    world.release("1.0.0", b"v1")
    store.remember(verify(world))
    assert parse_root(store.root() or b"").signed.version == 1
    assert store.targets_version() == 1
    store.start(anchor(world))
    assert store.targets_version() == 0, "a new root of trust forgets the old floors"
