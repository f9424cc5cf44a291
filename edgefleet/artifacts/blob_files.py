"""The filesystem implementation of the blob store port (`blobstore.BlobStore`).

Layout under the store's root::

    blobs/ab/cd/abcd...ef      one file per blob, read-only, named by its sha256 (hex)
    tmp/<random>.part          puts in progress; never visible under blobs/

A put streams into a temporary file while hashing, checks the expected size and sha256 if
given, fsyncs, then renames into place and fsyncs the directory: a crash at any instant
leaves either the whole blob or nothing under `blobs/`. `remove_partial_puts()` sweeps the
leftovers of crashed puts (call it once at start-up). Reads serve byte ranges for HTTP
`Range` requests, so an interrupted download resumes where it stopped. `receive()` takes a
blob chunk by chunk (`IncomingFile`), for a request body whose sender is only known to be
genuine once the whole body has been hashed.

Several processes may share one root (replicas on a shared volume): each put writes a
temporary file of its own and `rename` is atomic, so two replicas putting the same blob
both succeed and leave one copy; a reader sees a blob whole or not at all. Start-up's
`remove_partial_puts` only removes temporary files older than `PARTIAL_PUT_AGE_S`, so a
replica starting does not delete the put another replica has in progress.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

from edgefleet.artifacts.blobstore import (
    CHUNK_BYTES,
    DEFAULT_MAX_BLOB_BYTES,
    BlobInfo,
    check_digest,
    validate_sha256,
)
from edgefleet.errors import InvalidInput, NotFound, PayloadTooLarge, RangeNotSatisfiable

# A temporary file this old belongs to a crashed put (a put in progress writes to it at
# least once per chunk; an hour covers the slowest upload the size limit allows).
PARTIAL_PUT_AGE_S = 3600.0


class FileRangeReader:
    """An open byte range [start, end) of a blob; iterate for chunks, closes at the end.

    Opened eagerly, so a missing blob fails before any response headers are sent.
    """

    def __init__(self, path: Path, start: int, end: int, size_bytes: int) -> None:
        self.start = start
        self.end = end
        self.size_bytes = size_bytes
        self._file: BinaryIO | None = path.open("rb")
        self._file.seek(start)

    @property
    def length_bytes(self) -> int:
        return self.end - self.start

    @property
    def content_range(self) -> str:
        """The HTTP `Content-Range` header value for a 206 response."""
        return f"bytes {self.start}-{self.end - 1}/{self.size_bytes}"

    def __iter__(self) -> Iterator[bytes]:
        try:
            remaining = self.length_bytes
            while remaining > 0 and self._file is not None:
                chunk = self._file.read(min(CHUNK_BYTES, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            self.close()

    def read_all(self) -> bytes:
        return b"".join(self)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> FileRangeReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FilesystemBlobStore:
    """Blobs under `root`, at most `max_blob_bytes` each."""

    def __init__(self, root: Path, *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        self.root = root
        self.max_blob_bytes = max_blob_bytes
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the blob lives (whether or not it exists)."""
        validate_sha256(sha256)
        return self._blobs / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size_bytes(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no blob {sha256}", code="blob_not_found") from None

    def put(
        self,
        source: BinaryIO | Iterable[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size_bytes: int | None = None,
    ) -> BlobInfo:
        """Store the bytes of `source` (a binary file or an iterable of chunks).

        Raises PayloadTooLarge over the size limit, InvalidInput `hash_mismatch` or
        `size_mismatch` when expectations are not met; in every failure nothing is stored.
        Putting bytes that are already stored is a no-op that returns the same BlobInfo.
        """
        if expected_sha256 is not None:
            validate_sha256(expected_sha256)
        limit = self.max_blob_bytes
        if expected_size_bytes is not None:
            if expected_size_bytes > limit:
                raise PayloadTooLarge(
                    f"blob of {expected_size_bytes} bytes is over the limit of {limit} bytes"
                )
            limit = expected_size_bytes
        tmp = self._tmp / f"{secrets.token_hex(8)}.part"
        try:
            digest, size = _write_hashed(tmp, _chunks_of(source), limit)
            if size > limit:
                if expected_size_bytes is not None:
                    raise InvalidInput(
                        f"blob is longer than the expected {expected_size_bytes} bytes",
                        code="size_mismatch",
                    )
                raise PayloadTooLarge(f"blob is over the limit of {limit} bytes")
            if expected_size_bytes is not None and size != expected_size_bytes:
                raise InvalidInput(
                    f"blob has {size} bytes, expected {expected_size_bytes}",
                    code="size_mismatch",
                )
            if expected_sha256 is not None:
                check_digest(digest, expected_sha256)
            self._install(tmp, digest)
            return BlobInfo(digest, size)
        finally:
            tmp.unlink(missing_ok=True)

    def receive(self, limit_bytes: int, refusal: PayloadTooLarge | None = None) -> IncomingFile:
        """A blob to be written chunk by chunk (a request body as it arrives), at most
        `limit_bytes` long (else `refusal` is raised); it joins the store only when
        committed."""
        limit_bytes = min(limit_bytes, self.max_blob_bytes)
        refusal = refusal or PayloadTooLarge(f"blob is over the limit of {limit_bytes} bytes")
        tmp = self._tmp / f"{secrets.token_hex(8)}.part"
        return IncomingFile(self, tmp, limit_bytes, refusal)

    def _install(self, tmp: Path, sha256: str) -> None:
        """Rename a complete, fsynced temporary file into place as blob `sha256`."""
        final = self.path(sha256)
        if not final.exists():
            self._make_shard_dirs(final.parent)
            os.replace(tmp, final)
            _fsync_dir(final.parent)

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> FileRangeReader:
        """Open bytes [start, end) of a blob (end defaults to its size) for streaming.

        RangeNotSatisfiable when start is past the end of the blob.
        """
        path = self.path(sha256)
        size = self.size_bytes(sha256)
        if start < 0 or (end is not None and end < start):
            raise InvalidInput(f"invalid range [{start}, {end})", code="invalid_range")
        if start > 0 and start >= size:
            raise RangeNotSatisfiable(f"range starts at {start} but blob {sha256} has {size} bytes")
        stop = size if end is None else min(end, size)
        try:
            return FileRangeReader(path, start, stop, size)
        except FileNotFoundError:
            raise NotFound(f"no blob {sha256}", code="blob_not_found") from None

    def _make_shard_dirs(self, shard: Path) -> None:
        # A new directory entry is only durable once its parent directory is fsynced.
        for directory in (shard.parent, shard):
            if not directory.exists():
                directory.mkdir(exist_ok=True)
                _fsync_dir(directory.parent)

    def delete(self, sha256: str) -> None:
        """Remove a blob if present (garbage collection decides what is unreferenced)."""
        self.path(sha256).unlink(missing_ok=True)

    def remove_partial_puts(self, older_than_s: float = PARTIAL_PUT_AGE_S) -> int:
        """Delete the temporary files of puts that crashed, those untouched for
        `older_than_s` (younger ones may be another replica's puts in progress); how many."""
        removed = 0
        cutoff = time.time() - older_than_s
        for leftover in self._tmp.glob("*.part"):
            try:
                if leftover.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:  # its put just finished
                continue
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed


class IncomingFile:
    """A blob being received: each chunk goes to a temporary file while it is hashed, so
    nothing is held in memory. `commit` checks the hash and moves the file into the store;
    closing without a commit deletes it.

        with store.receive(limit) as incoming:
            for chunk in body:
                incoming.write(chunk)        # PayloadTooLarge past the limit
            ... decide from incoming.sha256 ...
            info = incoming.commit(expected_sha256)
    """

    def __init__(
        self, store: FilesystemBlobStore, tmp: Path, limit_bytes: int, refusal: PayloadTooLarge
    ) -> None:
        self._store = store
        self._tmp = tmp
        self.limit_bytes = limit_bytes
        self._refusal = refusal
        self.size_bytes = 0
        self._hasher = hashlib.sha256()
        self._fd: int | None = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)

    @property
    def sha256(self) -> str:
        return self._hasher.hexdigest()

    def write(self, chunk: bytes) -> None:
        """Append a chunk; the refusal (and the file gone) once over the limit."""
        if self._fd is None:
            raise ValueError("write to a closed IncomingFile")
        self.size_bytes += len(chunk)
        if self.size_bytes > self.limit_bytes:
            self.close()
            raise self._refusal
        self._hasher.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]

    def commit(self, expected_sha256: str) -> BlobInfo:
        """Store the received bytes as blob `expected_sha256`; InvalidInput
        `hash_mismatch` (and nothing stored) when they hash to something else."""
        if self._fd is None:
            raise ValueError("commit of a closed IncomingFile")
        try:
            check_digest(self.sha256, expected_sha256)
            os.fsync(self._fd)
            self._store._install(self._tmp, expected_sha256)
            return BlobInfo(expected_sha256, self.size_bytes)
        finally:
            self.close()

    def close(self) -> None:
        """Forget the bytes received (after a commit, the file is already in the store)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> IncomingFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _chunks_of(source: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    if hasattr(source, "read"):
        file = cast(BinaryIO, source)
        while chunk := file.read(CHUNK_BYTES):
            yield chunk
    else:
        yield from source


def _write_hashed(tmp: Path, chunks: Iterator[bytes], limit: int) -> tuple[str, int]:
    """Write chunks to `tmp` while hashing; stop one chunk past `limit` bytes."""
    hasher = hashlib.sha256()
    size = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                break
            hasher.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return hasher.hexdigest(), size


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
