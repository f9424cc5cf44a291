from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.artifacts.blob_files import PARTIAL_PUT_AGE_S, FilesystemBlobStore
from edgefleet.artifacts.blobstore import parse_range_header
from edgefleet.errors import InvalidInput, NotFound, PayloadTooLarge

DATA = bytes(range(256)) * 1000  # 256 kB, several chunks
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "store", max_blob_bytes=1 << 20)


def visible_files(store: FilesystemBlobStore) -> list[Path]:
    return [p for p in (store.root / "blobs").rglob("*") if p.is_file()]


def test_put_from_a_file_stores_under_its_sha256_in_sharded_dirs(
    store: FilesystemBlobStore,
) -> None:
    info = store.put(io.BytesIO(DATA))
    assert (info.sha256, info.size_bytes) == (SHA, len(DATA))
    assert store.path(SHA) == store.root / "blobs" / SHA[:2] / SHA[2:4] / SHA
    assert store.exists(SHA)
    assert store.size_bytes(SHA) == len(DATA)
    assert store.path(SHA).read_bytes() == DATA


def test_put_from_an_iterator_with_expectations(store: FilesystemBlobStore) -> None:
    chunks = (DATA[i : i + 1000] for i in range(0, len(DATA), 1000))
    info = store.put(chunks, expected_sha256=SHA, expected_size_bytes=len(DATA))
    assert info.sha256 == SHA


def test_putting_the_same_bytes_twice_is_harmless(store: FilesystemBlobStore) -> None:
    store.put(io.BytesIO(DATA))
    assert store.put(io.BytesIO(DATA)).sha256 == SHA
    assert visible_files(store) == [store.path(SHA)]


def test_hash_mismatch_stores_nothing(store: FilesystemBlobStore) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.put(io.BytesIO(DATA[:-1] + b"X"), expected_sha256=SHA)
    assert caught.value.code == "hash_mismatch"
    assert visible_files(store) == []
    assert list((store.root / "tmp").iterdir()) == []


def test_size_mismatch_stores_nothing(store: FilesystemBlobStore) -> None:
    for size in (len(DATA) - 1, len(DATA) + 1):
        with pytest.raises(InvalidInput) as caught:
            store.put(io.BytesIO(DATA), expected_size_bytes=size)
        assert caught.value.code == "size_mismatch"
    assert visible_files(store) == []


def test_size_limit(store: FilesystemBlobStore) -> None:
    with pytest.raises(PayloadTooLarge):
        store.put(io.BytesIO(b"x" * ((1 << 20) + 1)))
    with pytest.raises(PayloadTooLarge):
        store.put(io.BytesIO(b""), expected_size_bytes=(1 << 20) + 1)
    assert visible_files(store) == []


def test_an_endless_source_is_cut_off_at_the_limit(store: FilesystemBlobStore) -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b"\0" * 65536

    with pytest.raises(PayloadTooLarge):
        store.put(endless())


def test_interrupted_put_leaves_nothing_visible(store: FilesystemBlobStore) -> None:
    def dies_halfway() -> Iterator[bytes]:
        yield DATA[:1000]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put(dies_halfway())
    assert visible_files(store) == []
    assert list((store.root / "tmp").iterdir()) == []


def test_a_crashed_put_is_invisible_and_swept_at_start(store: FilesystemBlobStore) -> None:
    # What a SIGKILL mid-put leaves behind: a temp file and nothing else.
    crashed = store.root / "tmp" / "0123456789abcdef.part"
    crashed.write_bytes(DATA[:1000])
    hour_ago = time.time() - PARTIAL_PUT_AGE_S
    os.utime(crashed, (hour_ago, hour_ago))
    # A put in progress, maybe another replica's on the same volume: kept.
    (store.root / "tmp" / "fedcba9876543210.part").write_bytes(DATA[:10])
    assert visible_files(store) == []
    assert not store.exists(hashlib.sha256(DATA[:1000]).hexdigest())
    assert store.remove_partial_puts() == 1
    assert [p.name for p in (store.root / "tmp").iterdir()] == ["fedcba9876543210.part"]


def test_range_reads(store: FilesystemBlobStore) -> None:
    store.put(io.BytesIO(DATA))
    with store.open_range(SHA, 100, 70_000) as reader:
        assert reader.read_all() == DATA[100:70_000]
        assert reader.length_bytes == 69_900
        assert reader.content_range == f"bytes 100-69999/{len(DATA)}"
    assert store.open_range(SHA).read_all() == DATA
    assert store.open_range(SHA, len(DATA) - 5).read_all() == DATA[-5:]
    assert store.open_range(SHA, 0, 10 * len(DATA)).read_all() == DATA  # end is clamped


def test_resuming_a_download_reassembles_the_blob(store: FilesystemBlobStore) -> None:
    store.put(io.BytesIO(DATA))
    received = b""
    for chunk in store.open_range(SHA):
        received += chunk
        if len(received) >= 100_000:
            break  # the connection drops
    received = received[:100_000]
    received += store.open_range(SHA, len(received)).read_all()
    assert received == DATA


def test_range_outside_the_blob(store: FilesystemBlobStore) -> None:
    store.put(io.BytesIO(DATA))
    with pytest.raises(InvalidInput) as caught:
        store.open_range(SHA, len(DATA))
    assert caught.value.code == "range_not_satisfiable"
    with pytest.raises(InvalidInput):
        store.open_range(SHA, 10, 5)


def test_empty_blob(store: FilesystemBlobStore) -> None:
    info = store.put(io.BytesIO(b""))
    assert store.open_range(info.sha256).read_all() == b""


def test_unknown_and_malformed_names(store: FilesystemBlobStore) -> None:
    with pytest.raises(NotFound):
        store.open_range("0" * 64)
    with pytest.raises(NotFound):
        store.size_bytes("0" * 64)
    assert not store.exists("0" * 64)
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63):
        with pytest.raises(InvalidInput):
            store.path(bad)


def test_delete(store: FilesystemBlobStore) -> None:
    store.put(io.BytesIO(DATA))
    store.delete(SHA)
    assert not store.exists(SHA)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 100)),
        ("bytes=100-", (100, 1000)),
        ("bytes=-100", (900, 1000)),
        ("bytes=-5000", (0, 1000)),
        ("bytes=990-5000", (990, 1000)),
    ],
)
def test_parse_range_header(header: str, expected: tuple[int, int]) -> None:
    assert parse_range_header(header, 1000) == expected


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("bytes=1000-", "range_not_satisfiable"),
        ("bytes=-0", "range_not_satisfiable"),
        ("bytes=5-1", "invalid_range"),
        ("bytes=0-1,5-9", "invalid_range"),
        ("items=0-1", "invalid_range"),
        ("bytes=-", "invalid_range"),
    ],
)
def test_parse_range_header_refusals(header: str, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_range_header(header, 1000)
    assert caught.value.code == code
