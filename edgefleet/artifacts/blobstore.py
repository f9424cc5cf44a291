"""Blob store port: content-addressed blobs named by their sha256, and the pure helpers
every implementation shares (sha256 and HTTP Range parsing).

`BlobStore` is what the services use; `FilesystemBlobStore` (`blob_files.py`) implements it
on a directory, which replicas share by mounting the same one (docs/operator-guide.md,
"Several replicas"). Its contract: a put is all or nothing and idempotent (the same bytes
give the same BlobInfo); a blob is immutable once stored; a received blob
(`IncomingBlob`) joins the store only when committed with the digest it hashed to; reads
serve byte ranges, for resumed downloads; `path` gives a local file with the blob's bytes
for the tools that read files (delta encoding in a child process, ONNX inspection).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

from edgefleet.errors import InvalidInput, PayloadTooLarge, RangeNotSatisfiable

CHUNK_BYTES = 1 << 16
DEFAULT_MAX_BLOB_BYTES = 4 << 30
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def validate_sha256(sha256: str) -> str:
    """Return `sha256` if it is 64 lowercase hex digits, else raise InvalidInput."""
    if not _SHA256_RE.fullmatch(sha256):
        raise InvalidInput(
            f"invalid sha256 {sha256[:80]!r}: expected 64 lowercase hex digits",
            code="invalid_sha256",
        )
    return sha256


def check_digest(sha256: str, expected_sha256: str) -> None:
    """InvalidInput `hash_mismatch` unless the bytes received hash to what was announced."""
    if sha256 != expected_sha256:
        raise InvalidInput(f"blob sha256 is {sha256}, expected {expected_sha256}",
                           code="hash_mismatch")  # fmt: skip


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size_bytes: int


class BlobReader(Protocol):
    """An open byte range [start, end) of a blob; iterating yields its chunks and closes
    it. Opened eagerly, so a missing blob fails before any response headers are sent."""

    start: int
    end: int
    size_bytes: int

    @property
    def length_bytes(self) -> int: ...

    @property
    def content_range(self) -> str:
        """The HTTP `Content-Range` header value for a 206 response."""
        ...

    def __iter__(self) -> Iterator[bytes]: ...

    def read_all(self) -> bytes: ...

    def close(self) -> None: ...

    def __enter__(self) -> BlobReader: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class IncomingBlob(Protocol):
    """A blob being received chunk by chunk; it joins the store only when committed, and
    closing it without a commit forgets the bytes.

        with store.receive(limit) as incoming:
            for chunk in body:
                incoming.write(chunk)        # PayloadTooLarge past the limit
            ... decide from incoming.sha256 ...
            info = incoming.commit(expected_sha256)
    """

    size_bytes: int

    @property
    def sha256(self) -> str: ...

    def write(self, chunk: bytes) -> None:
        """Append a chunk; the refusal (and the bytes forgotten) once over the limit."""
        ...

    def commit(self, expected_sha256: str) -> BlobInfo:
        """Store the received bytes as blob `expected_sha256`; InvalidInput
        `hash_mismatch` (and nothing stored) when they hash to something else."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> IncomingBlob: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BlobStore(Protocol):
    """Content-addressed blobs, at most `max_blob_bytes` each."""

    max_blob_bytes: int

    def path(self, sha256: str) -> Path:
        """A local file holding the blob's bytes (whether or not the blob exists)."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def size_bytes(self, sha256: str) -> int:
        """The blob's size; NotFound `blob_not_found` when it is not stored."""
        ...

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
        ...

    def receive(self, limit_bytes: int, refusal: PayloadTooLarge | None = None) -> IncomingBlob:
        """A blob to be written chunk by chunk, at most `limit_bytes` long (else `refusal`
        is raised)."""
        ...

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> BlobReader:
        """Open bytes [start, end) of a blob (end defaults to its size) for streaming;
        RangeNotSatisfiable when start is past its end."""
        ...

    def delete(self, sha256: str) -> None:
        """Remove a blob if present (garbage collection decides what is unreferenced)."""
        ...

    def remove_partial_puts(self) -> int:
        """Forget puts that crashed (call once at start-up; never a put in progress, which
        may be another replica's); how many."""
        ...


def parse_range_header(header: str, size_bytes: int) -> tuple[int, int]:
    """Parse one HTTP byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`) into [start, end).

    >>> parse_range_header("bytes=0-99", 1000), parse_range_header("bytes=-100", 1000)
    ((0, 100), (900, 1000))

    Raises RangeNotSatisfiable (HTTP 416) when the range does
    not overlap the blob, and `invalid_range` when it does not parse or asks for several.
    """
    m = _RANGE_RE.fullmatch(header.strip())
    if m is None or (not m[1] and not m[2]):
        raise InvalidInput(f"unsupported Range header {header[:80]!r}", code="invalid_range")
    if not m[1]:
        suffix = int(m[2])
        if suffix == 0:
            raise RangeNotSatisfiable("empty suffix range")
        return max(size_bytes - suffix, 0), size_bytes
    start = int(m[1])
    end = min(int(m[2]) + 1, size_bytes) if m[2] else size_bytes
    if m[2] and int(m[2]) < start:
        raise InvalidInput(f"Range {header[:80]!r} ends before it starts", code="invalid_range")
    if start >= size_bytes:
        raise RangeNotSatisfiable(f"Range starts at {start} but the blob has {size_bytes} bytes")
    return start, end
