"""Sealed telemetry: the control plane's X25519 ingest keys, the fleet's sealing policy, and
opening the batches devices sealed (`security/sealing.py`).

The private keys live in DATA_DIR/ingest-keys.json (0600; replicas on one data volume share
it), newest first; the last KEPT_KEYS stay, so batches sealed before a rotation (queued on a
device, in flight) still open. The policy (`enabled`, and the current key's id and public
key) is a named telemetry policy in the database; every device's desired state carries the
public key while it is enabled (services/desired.py), signed with the rest of the document,
so an agent seals only to a key the control plane vouched for.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet.atomicfile import write_atomically
from edgefleet.clock import Clock, isoformat_utc
from edgefleet.errors import InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.security.sealed_stream import StreamUnsealer
from edgefleet.security.sealing import key_id_of, new_ingest_key, public_key_of, unseal
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.desired import FleetInputs, save_device
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database
from edgefleet.store.repositories.telemetry import SEALING_POLICY

KEYRING_FILE = "ingest-keys.json"
KEPT_KEYS = 3


@dataclass(frozen=True)
class SealingStatus:
    enabled: bool
    key_id: str | None
    public_key: str | None  # base64 raw X25519
    version: int


class SealingService:
    def __init__(
        self, db: Database, clock: Clock, data_dir: Path, watch: DesiredStateWatch
    ) -> None:
        self._db = db
        self._clock = clock
        self._path = data_dir / KEYRING_FILE
        self._watch = watch
        self._lock = threading.Lock()
        self._keys: dict[bytes, bytes] = {}

    def _read_keyring(self) -> list[dict[str, str]]:
        if not self._path.exists():
            return []
        keys: list[dict[str, str]] = json.loads(self._path.read_text())["keys"]
        return keys

    def _private_keys(self, key_id: bytes) -> dict[bytes, bytes]:
        """The known private keys, re-read from disk when `key_id` is not among them (a
        rotation by another replica)."""
        with self._lock:
            if key_id not in self._keys:
                self._keys = {
                    bytes.fromhex(k["key_id"]): base64.b64decode(k["private_key"])
                    for k in self._read_keyring()
                }
            return self._keys

    def status(self, ctx: OperatorContext) -> SealingStatus:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            record = tx.telemetry.policy_record(SEALING_POLICY)
        return _status(record)

    def configure(self, ctx: OperatorContext, enabled: bool, rotate: bool) -> SealingStatus:
        """Turn sealing on or off; `rotate` (or turning it on the first time) makes a new
        ingest key. Every device's desired state follows."""
        ctx.require(Permission.TELEMETRY_WRITE)
        now = self._clock.now()
        changed: list[str] = []
        with self._db.transaction() as tx:
            record = tx.telemetry.policy_record(SEALING_POLICY)
            document: dict[str, Any] = dict(record["document"]) if record else {}
            if rotate or (enabled and "key_id" not in document):
                document.update(self._new_key(now))
            document["enabled"] = enabled
            version = tx.telemetry.save_policy(document, record["version"] if record else 0,
                                               ctx.actor, now, name=SEALING_POLICY)  # fmt: skip
            fleet = FleetInputs(tx)  # read after the new policy is saved
            for device in tx.devices.all():
                saved = save_device(tx, device, fleet)
                if saved.desired_generation != device.desired_generation:
                    changed.append(device.id)
            record_action(tx, ctx, "telemetry.sealing.set", "telemetry-policy/sealing", now,
                          {"enabled": enabled, "key_id": document.get("key_id"),
                           "rotated": rotate, "devices_changed": len(changed)})  # fmt: skip
        for device_id in changed:
            self._watch.notify(device_id)
        return _status({"document": document, "version": version})

    def _new_key(self, now: Any) -> dict[str, str]:
        """A new ingest key, first in the keyring file; its public part."""
        private = new_ingest_key()
        public = public_key_of(private)
        key_id = key_id_of(public).hex()
        with self._lock:
            keys = self._read_keyring()
            keys.insert(0, {"key_id": key_id, "private_key": base64.b64encode(private).decode(),
                            "created_at": isoformat_utc(now)})  # fmt: skip
            write_atomically(self._path, json.dumps({"keys": keys[:KEPT_KEYS]}).encode(),
                             mode=0o600)  # fmt: skip
            self._keys = {}
        return {"key_id": key_id, "public_key": base64.b64encode(public).decode()}

    def unseal(self, device_id: str, sealed: bytes) -> bytes:
        """The batch a device sealed; InvalidInput when it does not open."""
        from edgefleet.security.sealing import KEY_ID_BYTES, MAGIC

        key_id = sealed[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES]
        return unseal(self._private_keys(key_id), device_id, sealed)

    def stream_unsealer(self, device_id: str) -> StreamUnsealer:
        """An opener of a stream `device_id` sealed (a state archive), fed as it arrives."""
        return StreamUnsealer(self._private_keys, device_id)


def _status(record: dict[str, Any] | None) -> SealingStatus:
    if record is None:
        return SealingStatus(False, None, None, 0)
    document = record["document"]
    return SealingStatus(bool(document.get("enabled")), document.get("key_id"),
                         document.get("public_key"), record["version"])  # fmt: skip


def check_sealed_media(media: str, sealed_media: str, plain_media: str) -> bool:
    """Whether a telemetry upload is sealed, from its content type; InvalidInput naming
    both accepted types otherwise."""
    if media not in (sealed_media, plain_media):
        raise InvalidInput(
            f"telemetry batches are sent as {plain_media} or {sealed_media}, "
            f"not {media or 'nothing'}",
            code="unsupported_content_type",
        )
    return media == sealed_media
