"""The server's delta service bounds the work it takes on."""

from __future__ import annotations

import io
from concurrent.futures import Future
from pathlib import Path

from edgefleet.artifacts.blobstore import BlobStore
from edgefleet.server.services import deltas
from edgefleet.server.services.deltas import DeltaService, DeltaState


def test_a_request_beyond_the_pending_bound_is_unavailable_not_queued(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    shas = [blobs.put(io.BytesIO(bytes([i]) * 1000)).sha256 for i in range(4)]
    service = DeltaService(blobs, tmp_path / "deltas")
    for i in range(deltas.MAX_PENDING_DELTAS):  # the pool is busy with other pairs
        service._running[(f"{i:064x}", shas[0])] = Future()
    status = service.request(shas[1], shas[2])
    assert status.state is DeltaState.UNAVAILABLE
    assert "try later" in status.reason
    assert (shas[1], shas[2]) not in service._running
    assert service.request(shas[3], shas[0]).state is DeltaState.UNAVAILABLE
