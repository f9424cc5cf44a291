"""The server's delta service bounds the work it takes on."""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import Future
from pathlib import Path

from edgefleet.artifacts.blob_files import FilesystemBlobStore
from edgefleet.server.services import deltas
from edgefleet.server.services.deltas import DeltaService, DeltaState


def test_a_request_beyond_the_pending_bound_is_unavailable_not_queued(tmp_path: Path) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    shas = [blobs.put(io.BytesIO(bytes([i]) * 1000)).sha256 for i in range(4)]
    service = DeltaService(blobs, tmp_path / "deltas")
    for i in range(deltas.MAX_PENDING_DELTAS):  # the pool is busy with other pairs
        service._running[(f"{i:064x}", shas[0])] = Future()
    status = service.request(shas[1], shas[2])
    assert status.state is DeltaState.UNAVAILABLE
    assert "try later" in status.reason
    assert (shas[1], shas[2]) not in service._running
    assert service.request(shas[3], shas[0]).state is DeltaState.UNAVAILABLE


def _ready(service: DeltaService, old: str, new: str, size: int, served_at: float) -> None:
    """A computed pair as _finished leaves it, served last at `served_at`."""
    path = service.path(old, new)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"d" * size)
    service._meta_path(old, new).write_text(
        json.dumps({"state": "ready", "delta_size": size, "target_size": 10_000})
    )
    os.utime(path, (served_at, served_at))


def test_prune_keeps_the_cache_within_its_size_least_recently_served_first(
    tmp_path: Path,
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    shas = [blobs.put(io.BytesIO(bytes([i]) * 1000)).sha256 for i in range(4)]
    service = DeltaService(blobs, tmp_path / "deltas")
    _ready(service, shas[0], shas[1], 300, served_at=1_000)
    _ready(service, shas[1], shas[2], 300, served_at=3_000)
    _ready(service, shas[2], shas[3], 300, served_at=2_000)
    service.touch(shas[0], shas[1])  # served just now: the most recent

    assert service.prune(max_bytes=700) == 1
    assert service.status(shas[2], shas[3]).state is DeltaState.PENDING  # forgotten
    assert not service.path(shas[2], shas[3]).exists()
    for old, new in ((shas[0], shas[1]), (shas[1], shas[2])):
        assert service.status(old, new).state is DeltaState.READY
    assert service.prune(max_bytes=700) == 0


def test_prune_forgets_pairs_whose_blobs_are_gone_and_a_missing_delta_is_not_ready(
    tmp_path: Path,
) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    shas = [blobs.put(io.BytesIO(bytes([i]) * 1000)).sha256 for i in range(2)]
    service = DeltaService(blobs, tmp_path / "deltas")
    gone = f"{7:064x}"
    _ready(service, gone, shas[1], 100, served_at=1_000)
    _ready(service, shas[0], shas[1], 100, served_at=1_000)
    assert service.prune(max_bytes=10**9) == 1
    assert not service._meta_path(gone, shas[1]).exists()

    service.path(shas[0], shas[1]).unlink()  # evicted between status and serving
    status = service.status(shas[0], shas[1])
    assert status.state is DeltaState.UNAVAILABLE and status.reason == "pruned"
    assert service.prune(max_bytes=10**9) == 1  # and then forgotten: computed anew if asked
    assert service.status(shas[0], shas[1]).reason == "not scheduled"
