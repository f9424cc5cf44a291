"""Signed releases end to end: operators sign, the repository publishes, a device verifies.

No server: the device's fetch callable reads the repository directory, and `World.served`
lets a test play the attacker by serving other bytes for a metadata file.

python-tuf judges expiry by the system clock, so valid metadata is made at NOW (2100)
and expired metadata at PAST (2001); no test depends on how long anything takes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Snapshot,
    Timestamp,
)

from edgefleet.agent.release_verification import (
    ReleaseRefused,
    VerifiedFile,
    VerifyRequest,
    check_release,
    verify_file,
)
from edgefleet.errors import (
    Conflict,
    EdgefleetError,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    Unavailable,
)
from edgefleet.security.tuf_client import TufClient
from edgefleet.security.tuf_keys import generate_signing_key
from edgefleet.security.tuf_metadata import (
    MAX_TARGETS_BYTES,
    MAX_TIMESTAMP_BYTES,
    ReleaseTarget,
    RoleKeys,
    build_next_root,
    build_root,
    sign_metadata,
    summarize_metadata,
)
from edgefleet.security.tuf_repository import TufRepository

NOW = datetime(2100, 1, 1, tzinfo=UTC)
PAST = datetime(2001, 1, 1, tzinfo=UTC)
BASE_URL = "/v1/tuf/"


def keys(n: int) -> list[CryptoSigner]:
    return [generate_signing_key() for _ in range(n)]


@dataclass
class World:
    tmp: Path
    root_keys: list[CryptoSigner] = field(default_factory=lambda: keys(1))
    targets_keys: list[CryptoSigner] = field(default_factory=lambda: keys(2))
    snapshot_key: CryptoSigner = field(default_factory=generate_signing_key)
    timestamp_key: CryptoSigner = field(default_factory=generate_signing_key)
    served: dict[str, bytes | Iterator[bytes]] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.repo = TufRepository(
            self.tmp / "repo",
            snapshot_signer=self.snapshot_key,
            timestamp_signer=self.timestamp_key,
        )
        root = build_root(
            root=RoleKeys(tuple(k.public_key for k in self.root_keys)),
            targets=RoleKeys(tuple(k.public_key for k in self.targets_keys), threshold=2),
            snapshot=RoleKeys((self.snapshot_key.public_key,)),
            timestamp=RoleKeys((self.timestamp_key.public_key,)),
            expires=NOW + timedelta(days=365),
        )
        self.repo.initialize(signed_by(root, *self.root_keys), now=NOW)
        TufClient.store_enrollment_root(self.tmp / "device", self.repo.root_bytes())
        self.client = TufClient(self.tmp / "device", self.fetch, metadata_base_url=BASE_URL)

    def fetch(self, url: str) -> bytes | Iterator[bytes]:
        name = url.removeprefix(BASE_URL)
        self.fetched.append(name)
        if name in self.served:
            return self.served[name]
        return self.repo.read_metadata(name)

    def fetch_bytes(self, url: str) -> bytes:
        """`fetch` for the agent's check of a release, which takes whole files only."""
        data = self.fetch(url)
        assert isinstance(data, bytes), f"{url} is served as chunks"
        return data

    def release(
        self,
        version: str,
        content: bytes,
        *,
        signers: list[CryptoSigner] | None = None,
        now: datetime = NOW,
    ) -> ReleaseTarget:
        target = make_target(version, content)
        staged = self.repo.stage_targets([target], expires=now + timedelta(days=90))
        self.repo.publish_targets(
            signed_by(staged, *(self.targets_keys if signers is None else signers)), now=now
        )
        return target

    def forge_online_metadata(self, targets: bytes) -> None:
        """Serve `targets` as the next release, with snapshot and timestamp signed by the
        server's real online keys: what an attacker who owns the server can do."""
        raw = self.repo.read_metadata("timestamp.json")
        current: Timestamp = Metadata[Timestamp].from_bytes(raw).signed
        version = Metadata.from_bytes(targets).signed.version
        snapshot = Metadata(
            Snapshot(
                version=current.snapshot_meta.version + 1,
                expires=NOW + timedelta(days=7),
                meta={"targets.json": MetaFile(version=version)},
            )
        )
        snapshot.sign(self.snapshot_key)
        timestamp = Metadata(
            Timestamp(
                version=current.version + 1,
                expires=NOW + timedelta(days=1),
                snapshot_meta=MetaFile(version=snapshot.signed.version),
            )
        )
        timestamp.sign(self.timestamp_key)
        self.served[f"{version}.targets.json"] = targets
        self.served[f"{snapshot.signed.version}.snapshot.json"] = snapshot.to_bytes()
        self.served["timestamp.json"] = timestamp.to_bytes()


def signed_by(metadata: bytes, *signers: CryptoSigner) -> bytes:
    for signer in signers:
        metadata = sign_metadata(metadata, signer)
    return metadata


def make_target(version: str, content: bytes) -> ReleaseTarget:
    return ReleaseTarget(
        release_name="vision",
        release_version=version,
        artifact_name="detector",
        artifact_version=version,
        artifact_kind="onnx-model",
        file_name="model.onnx",
        length_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        requirements=("arch=aarch64", "runtime=onnxruntime>=1.17"),
    )


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def refused(call: object, error: type[EdgefleetError] = Unauthenticated) -> str:
    """Run `call`, expect `error`, return its code."""
    assert callable(call)
    with pytest.raises(error) as caught:
        call()
    return caught.value.code


# --- the normal path ---------------------------------------------------------------------


def test_a_signed_release_verifies_and_carries_its_custom_fields(world: World) -> None:
    target = world.release("1.0.0", b"model v1")
    info = world.client.verify_target(target.path)
    assert info.path == "releases/vision/1.0.0/model.onnx"
    assert (info.length_bytes, info.sha256) == (len(b"model v1"), target.sha256)
    assert info.release_target == target
    assert info.custom["requirements"] == ["arch=aarch64", "runtime=onnxruntime>=1.17"]


# --- the agent's check of a release (run by its install helper) -------------------------

DEVICE = {"hardware": {"arch": "aarch64"}, "software": {"onnxruntime": "1.18.0"}}


def check(
    world: World, *paths: str, version: str = "1.0.0", inventory: dict[str, Any] | None = None
) -> list[VerifiedFile]:
    request = VerifyRequest(
        world.tmp / "device", "vision", version, paths, DEVICE if inventory is None else inventory
    )
    return check_release(request, world.fetch_bytes, world.warnings.append)


def test_the_agent_check_returns_each_file_and_verifies_its_download(world: World) -> None:
    target = world.release("1.0.0", b"model v1")
    [file] = check(world, target.path)
    assert file == VerifiedFile(
        target.path,
        len(b"model v1"),
        {"sha256": target.sha256},
        "detector",
        "onnx-model",
        "model.onnx",
    )
    assert VerifiedFile.from_wire(file.to_wire(), target.path) == file
    artifact = world.tmp / "download"
    artifact.write_bytes(b"model v1")
    verify_file(file, artifact)
    for bad in (b"model v2", b"model v1 plus a payload", b"model v9"):
        artifact.write_bytes(bad)
        assert refused(lambda: verify_file(file, artifact), InvalidInput) == "hash_mismatch"


def test_the_agent_check_refuses_other_releases_and_incompatible_devices(world: World) -> None:
    target = world.release("1.0.0", b"model v1")
    with pytest.raises(ReleaseRefused, match="belongs to another release"):
        check(world, target.path, version="2.0.0")
    with pytest.raises(ReleaseRefused, match="incompatible: detector"):
        check(world, target.path, inventory={**DEVICE, "hardware": {"arch": "x86_64"}})
    with pytest.raises(ReleaseRefused, match="release metadata refused"):
        check(world, "releases/vision/1.0.0/other.onnx")


def test_the_agent_check_pins_the_first_root_on_first_use(world: World) -> None:
    target = world.release("1.0.0", b"model v1")
    fresh = world.tmp / "fresh-device"
    request = VerifyRequest(fresh, "vision", "1.0.0", (target.path,), DEVICE)
    assert [f.path for f in check_release(request, world.fetch_bytes, world.warnings.append)] == [
        target.path
    ]
    assert "1.root.json" in world.fetched and "trust on first use" in world.warnings[0]
    assert (fresh / "enrollment_root.json").exists()


def test_verified_facts_that_could_name_a_file_outside_its_directory_are_refused() -> None:
    good = VerifiedFile("releases/a/1.0.0/m.onnx", 3, {"sha256": "0" * 64}, "m", "file", "m.onnx")
    for change in (
        {"file_name": "../m.onnx"},
        {"path": "releases/a/1.0.0/x"},
        {"hashes": {"sha256": "nope"}},
        {"length_bytes": -1},
        {"artifact_kind": 3},
    ):
        with pytest.raises(InvalidInput):
            VerifiedFile.from_wire({**good.to_wire(), **change}, good.path)


def test_consistent_snapshot_file_names_are_served(world: World) -> None:
    world.release("1.0.0", b"v1")
    world.client.verify_target(make_target("1.0.0", b"v1").path)
    assert world.fetched == ["2.root.json", "timestamp.json", "1.snapshot.json", "1.targets.json"]


def test_later_releases_keep_earlier_ones(world: World) -> None:
    first = world.release("1.0.0", b"v1")
    second = world.release("2.0.0", b"v2")
    infos = world.client.verify_targets([first.path, second.path])
    assert [i.sha256 for i in infos] == [first.sha256, second.sha256]
    assert sorted(t.path for t in world.repo.release_targets()) == [first.path, second.path]


def test_an_unlisted_target_is_not_found(world: World) -> None:
    world.release("1.0.0", b"v1")
    assert refused(lambda: world.client.verify_target("releases/x/1.0.0/a"), NotFound)


def test_a_device_without_a_trusted_root_refuses(world: World) -> None:
    client = TufClient(world.tmp / "other-device", world.fetch, metadata_base_url=BASE_URL)
    assert refused(lambda: client.verify_target("x"), NotFound) == "tuf_no_root"


def test_the_enrollment_root_is_not_silently_replaced(world: World, tmp_path: Path) -> None:
    other = World(tmp_path / "other")
    device = world.tmp / "device"
    assert (
        refused(lambda: TufClient.store_enrollment_root(device, other.repo.root_bytes()), Conflict)
        == "tuf_root_exists"
    )
    TufClient.store_enrollment_root(device, world.repo.root_bytes())  # same root: fine


def test_nothing_published_yet_is_unavailable(world: World) -> None:
    assert refused(lambda: world.client.verify_target("x"), Unavailable) == "tuf_fetch_failed"


# --- tampering ---------------------------------------------------------------------------


def test_unsigned_timestamp_is_refused(world: World) -> None:
    target = world.release("1.0.0", b"v1")
    stripped = Metadata.from_bytes(world.repo.read_metadata("timestamp.json"))
    stripped.signatures.clear()
    world.served["timestamp.json"] = stripped.to_bytes()
    assert refused(lambda: world.client.verify_target(target.path)) == "tuf_unsigned"


def test_tampered_targets_metadata_is_refused(world: World) -> None:
    target = world.release("1.0.0", b"v1")
    raw = world.repo.read_metadata("1.targets.json")
    world.served["1.targets.json"] = raw.replace(target.sha256.encode(), b"0" * 64)
    assert refused(lambda: world.client.verify_target(target.path)) == "tuf_hash_mismatch"


def test_expired_metadata_is_refused(world: World) -> None:
    # Published at PAST: timestamp and snapshot expired long before the device's clock.
    target = world.release("1.0.0", b"v1", now=PAST)
    assert refused(lambda: world.client.verify_target(target.path)) == "tuf_expired"


def test_server_refuses_targets_that_already_expired(world: World) -> None:
    staged = world.repo.stage_targets([make_target("1.0.0", b"v1")], expires=NOW)
    signed = signed_by(staged, *world.targets_keys)
    assert refused(lambda: world.repo.publish_targets(signed, now=NOW), InvalidInput) == (
        "expired_metadata"
    )


# --- thresholds --------------------------------------------------------------------------


def test_server_refuses_targets_below_threshold(world: World) -> None:
    staged = world.repo.stage_targets([make_target("1.0.0", b"v1")], expires=NOW + timedelta(1))
    for signers in ([], world.targets_keys[:1], [world.snapshot_key, world.timestamp_key]):
        signed = signed_by(staged, *signers)
        with pytest.raises(Forbidden, match=r"targets was signed by \d/2 keys") as caught:
            world.repo.publish_targets(signed, now=NOW)
        assert caught.value.code == "insufficient_signatures"
    assert world.repo.targets() is None


def test_device_refuses_targets_below_threshold_even_from_the_real_server(world: World) -> None:
    world.release("1.0.0", b"v1")
    evil = make_target("1.0.1", b"backdoor")
    staged = world.repo.stage_targets([evil], expires=NOW + timedelta(days=1))
    world.forge_online_metadata(signed_by(staged, world.targets_keys[0]))
    assert refused(lambda: world.client.verify_target(evil.path)) == "tuf_unsigned"


def test_summary_shows_what_a_signer_is_about_to_sign(world: World) -> None:
    world.release("1.0.0", b"v1")
    staged = world.repo.stage_targets([make_target("2.0.0", b"v2")], expires=NOW + timedelta(1))
    summary = summarize_metadata(sign_metadata(staged, world.targets_keys[0]))
    assert (summary.role, summary.version) == ("targets", 2)
    assert summary.signed_by == (world.targets_keys[0].public_key.keyid,)
    assert summary.target_paths == (
        "releases/vision/1.0.0/model.onnx",
        "releases/vision/2.0.0/model.onnx",
    )


# --- rollback and freeze -----------------------------------------------------------------


def test_rollback_to_an_older_timestamp_is_refused(world: World) -> None:
    first = world.release("1.0.0", b"v1")
    old_timestamp = world.repo.read_metadata("timestamp.json")
    world.release("2.0.0", b"v2")
    world.client.verify_target(first.path)  # the device has now seen version 2
    world.served["timestamp.json"] = old_timestamp
    assert refused(lambda: world.client.verify_target(first.path)) == "tuf_rollback"


def test_server_refuses_a_stale_targets_version(world: World) -> None:
    staged = world.repo.stage_targets([make_target("1.0.0", b"v1")], expires=NOW + timedelta(1))
    world.release("2.0.0", b"v2")  # someone else published version 1 meanwhile
    signed = signed_by(staged, *world.targets_keys)
    assert refused(lambda: world.repo.publish_targets(signed, now=NOW), Conflict) == (
        "stale_version"
    )


def test_published_release_files_are_immutable(world: World) -> None:
    world.release("1.0.0", b"v1")
    with pytest.raises(Conflict):
        world.repo.stage_targets([make_target("1.0.0", b"other")], expires=NOW + timedelta(1))


def test_removing_a_release(world: World) -> None:
    first = world.release("1.0.0", b"v1")
    staged = world.repo.stage_targets(remove_paths=[first.path], expires=NOW + timedelta(1))
    world.repo.publish_targets(signed_by(staged, *world.targets_keys), now=NOW)
    assert refused(lambda: world.client.verify_target(first.path), NotFound)


# --- endless data ------------------------------------------------------------------------


def endless() -> Iterator[bytes]:
    while True:
        yield b"{" * 65536


@pytest.mark.parametrize("name", ["timestamp.json", "2.root.json"])
def test_endless_metadata_is_cut_off(world: World, name: str) -> None:
    target = world.release("1.0.0", b"v1")
    world.served[name] = endless()
    assert refused(lambda: world.client.verify_target(target.path)) == "tuf_metadata_too_large"


def test_oversized_metadata_in_one_piece_is_refused(world: World) -> None:
    target = world.release("1.0.0", b"v1")
    world.served["timestamp.json"] = b" " * (MAX_TIMESTAMP_BYTES + 1)
    assert refused(lambda: world.client.verify_target(target.path)) == "tuf_metadata_too_large"


# --- online metadata refresh -------------------------------------------------------------


def test_timestamp_is_refreshed_when_half_its_life_has_passed(world: World) -> None:
    target = world.release("1.0.0", b"v1")
    assert not world.repo.due_for_refresh(NOW + timedelta(hours=11))
    assert world.repo.due_for_refresh(NOW + timedelta(hours=13))
    assert world.repo.refresh_timestamp(NOW + timedelta(hours=13)) == 2
    assert world.repo.read_metadata("1.snapshot.json")
    with pytest.raises(NotFound):
        world.repo.read_metadata("2.snapshot.json")  # snapshot was not due
    world.repo.refresh_timestamp(NOW + timedelta(days=4))
    assert world.repo.read_metadata("2.snapshot.json")
    assert world.client.verify_target(target.path).sha256 == target.sha256


# --- key rotation ------------------------------------------------------------------------


def test_root_rotation_is_followed_by_devices(world: World) -> None:
    target = world.release("1.0.0", b"v1")
    world.client.verify_target(target.path)
    new_root_keys = keys(2)
    next_root = build_next_root(
        world.repo.root_bytes(),
        root=RoleKeys(tuple(k.public_key for k in new_root_keys), threshold=2),
        expires=NOW + timedelta(days=365),
    )
    only_new = signed_by(next_root, *new_root_keys)
    assert refused(lambda: world.repo.rotate_root(only_new, now=NOW), Forbidden) == (
        "insufficient_signatures"
    )
    assert world.repo.rotate_root(signed_by(only_new, *world.root_keys), now=NOW) == 2
    assert world.client.trusted_root_version() == 2
    second = world.release("2.0.0", b"v2")
    assert world.client.verify_target(second.path).sha256 == second.sha256

    # A third root signed only by the revoked first key is refused.
    third = build_next_root(world.repo.root_bytes(), expires=NOW + timedelta(days=365))
    forged = signed_by(third, *world.root_keys)
    assert refused(lambda: world.repo.rotate_root(forged, now=NOW), Forbidden)
    world.served["3.root.json"] = forged
    assert refused(lambda: world.client.verify_target(second.path)) == "tuf_unsigned"


def test_device_refuses_a_root_signed_only_by_new_keys(world: World) -> None:
    target = world.release("1.0.0", b"v1")
    attacker = keys(1)
    next_root = build_next_root(
        world.repo.root_bytes(),
        root=RoleKeys((attacker[0].public_key,)),
        expires=NOW + timedelta(days=365),
    )
    world.served["2.root.json"] = signed_by(next_root, *attacker)
    assert refused(lambda: world.client.verify_target(target.path)) == "tuf_unsigned"


def test_targets_key_rotation_revokes_the_old_keys(world: World) -> None:
    first = world.release("1.0.0", b"v1")
    world.client.verify_target(first.path)
    new_targets_key = generate_signing_key()
    next_root = signed_by(
        build_next_root(
            world.repo.root_bytes(),
            targets=RoleKeys((new_targets_key.public_key,)),
            expires=NOW + timedelta(days=365),
        ),
        *world.root_keys,
    )
    assert refused(lambda: world.repo.rotate_root(next_root, now=NOW), Conflict) == (
        "targets_need_resigning"
    )
    resigned = signed_by(world.repo.stage_targets(expires=NOW + timedelta(90)), new_targets_key)
    assert world.repo.rotate_root(next_root, now=NOW, targets=resigned) == 2
    assert world.client.verify_target(first.path).sha256 == first.sha256
    second = world.release("2.0.0", b"v2", signers=[new_targets_key])
    assert world.client.verify_target(second.path).sha256 == second.sha256

    # The old keys, even both of them, no longer sign releases.
    staged = world.repo.stage_targets([make_target("3.0.0", b"v3")], expires=NOW + timedelta(1))
    old_signed = signed_by(staged, *world.targets_keys)
    assert refused(lambda: world.repo.publish_targets(old_signed, now=NOW), Forbidden)
    world.forge_online_metadata(old_signed)
    assert refused(lambda: world.client.verify_target(second.path)) == "tuf_unsigned"


def test_interrupted_rotation_completes_when_repeated(world: World) -> None:
    first = world.release("1.0.0", b"v1")
    new_targets_key = generate_signing_key()
    next_root = signed_by(
        build_next_root(
            world.repo.root_bytes(),
            targets=RoleKeys((new_targets_key.public_key,)),
            expires=NOW + timedelta(days=365),
        ),
        *world.root_keys,
    )
    resigned = signed_by(world.repo.stage_targets(expires=NOW + timedelta(90)), new_targets_key)
    # The process died right after writing the new root.
    (world.repo.directory / "2.root.json").write_bytes(next_root)
    assert world.repo.rotate_root(next_root, now=NOW, targets=resigned) == 2
    assert world.client.verify_target(first.path).sha256 == first.sha256


def test_root_must_keep_the_servers_online_keys(world: World) -> None:
    next_root = signed_by(
        build_next_root(
            world.repo.root_bytes(),
            timestamp=RoleKeys((generate_signing_key().public_key,)),
            expires=NOW + timedelta(days=365),
        ),
        *world.root_keys,
    )
    assert refused(lambda: world.repo.rotate_root(next_root, now=NOW), Conflict) == (
        "online_key_not_in_root"
    )


# --- serving -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../1.root.json", "root.json", ".lock", "0.root.json", "1.root.json/..", "x.json"]
)
def test_only_metadata_file_names_are_served(world: World, name: str) -> None:
    assert refused(lambda: world.repo.read_metadata(name), NotFound)


# --- initialization ----------------------------------------------------------------------


def test_repository_adopts_only_a_self_signed_root(world: World) -> None:
    root_key, snapshot, timestamp = keys(3)
    unsigned = build_root(
        root=RoleKeys((root_key.public_key,)),
        targets=RoleKeys((root_key.public_key,)),
        snapshot=RoleKeys((snapshot.public_key,)),
        timestamp=RoleKeys((timestamp.public_key,)),
        expires=NOW + timedelta(days=365),
    )
    repo = TufRepository(world.tmp / "r2", snapshot_signer=snapshot, timestamp_signer=timestamp)
    assert refused(lambda: repo.initialize(unsigned, now=NOW), Forbidden)
    assert (
        refused(
            lambda: repo.initialize(signed_by(unsigned, root_key), now=NOW + timedelta(days=366)),
            InvalidInput,
        )
        == "expired_metadata"
    )
    assert not repo.initialized
    repo.initialize(signed_by(unsigned, root_key), now=NOW)
    assert refused(lambda: repo.initialize(signed_by(unsigned, root_key), now=NOW), Conflict)


def test_oversized_targets_are_not_published(world: World) -> None:
    assert refused(
        lambda: world.repo.publish_targets(b" " * (MAX_TARGETS_BYTES + 1), now=NOW),
        PayloadTooLarge,
    )
