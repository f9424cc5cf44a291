"""What replicas sharing one data dir do to it at once, as separate processes on one host:
blobs put together are stored once and whole, and TUF metadata written together loses no
version (the repository's `.lock`, an flock, serializes writers across processes)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

from edgefleet.artifacts.blob_files import FilesystemBlobStore
from tests.unit.test_tuf import NOW, World

WRITERS = 4
ROUNDS = 15
DATA = os.urandom(300_000)  # several chunks


def run_in_processes(work: Callable[[int], None]) -> None:
    """`work(i)` in WRITERS forked processes started together; each must exit 0."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(WRITERS)

    def child(i: int) -> None:
        start.wait()
        work(i)

    processes = [context.Process(target=child, args=(i,)) for i in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0


def test_replicas_putting_the_same_blobs_store_each_once_and_whole(tmp_path: Path) -> None:
    root = tmp_path / "shared" / "blobs"
    FilesystemBlobStore(root)
    blobs = [DATA[i:] for i in range(ROUNDS)]

    def put_all(_: int) -> None:
        store = FilesystemBlobStore(root)  # each replica opens the shared root itself
        for blob in blobs:
            store.put([blob], expected_sha256=hashlib.sha256(blob).hexdigest())

    run_in_processes(put_all)
    store = FilesystemBlobStore(root)
    for blob in blobs:
        with store.open_range(hashlib.sha256(blob).hexdigest()) as reader:
            assert reader.read_all() == blob
    assert sum(1 for p in (root / "blobs").rglob("*") if p.is_file()) == ROUNDS
    assert list((root / "tmp").iterdir()) == []


def test_replicas_refreshing_tuf_metadata_together_lose_no_version(tmp_path: Path) -> None:
    world = World(tmp_path)
    target = world.release("1.0.0", b"model bytes")
    before = world.repo.refresh_timestamp(NOW)

    def refresh(_: int) -> None:
        for _ in range(ROUNDS):
            world.repo.refresh_timestamp(NOW)

    run_in_processes(refresh)
    assert world.repo.refresh_timestamp(NOW) == before + WRITERS * ROUNDS + 1
    # And a device still verifies the release through the chain they wrote.
    assert world.client.verify_target(target.path).release_target == target
