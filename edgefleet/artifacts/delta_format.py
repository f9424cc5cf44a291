"""The delta file format: its byte layout, its header, and the checks a reader makes.

A delta turns one exact base file into one exact target file. Layout (integers are
little-endian)::

    offset        size  field
    0             8     magic b"EFDELTA\\n"
    8             2     format version (2; version 1, without predictors, is still read)
    10            4     header length H
    14            H     header, a msgpack map (below)
    14+H          P     payload: tensor chunk blobs and literal segments, back to back
    14+H+P        32    sha256 of every byte before it

    header = {
      "base":     [size, sha256 (32 bytes)],       the file the delta applies to
      "target":   [size, sha256 (32 bytes)],       the file it produces
      "segments": [[size, blob_off, blob_len, [[old_off, len], ...]], ...],
      "ops":      [op, ...],                       run in order, each appends to the target
    }
    op = [0, old_off, length]                      COPY: bytes of the base, unchanged
       | [1, length]                               LITERAL: the next bytes of the literal stream
       | [2, name, kind, count, old_off | -1, chunk_elements, [[blob_off, blob_len], ...],
          predictor]                               TENSOR: `count` elements of element kind
                                                   `kind`, chunk by chunk (tensor_codec),
                                                   against the base's elements at old_off
    predictor = nil                                (version 1 ops have no such field)
              | [rows, cols, rank, unit, [multiplier, ...], blob_off, blob_len]
                                                   low-rank factors (delta_predictor) that
                                                   predict the tensor from its old elements
    kind = 0 bytes, 1 u8, 2 i8, 3 u16, 4 i16, 5 u32, 6 i32, 7 u64, 8 i64,
           9 f16, 10 bf16, 11 f32, 12 f64

The literal stream is the concatenation of the segments, in order. Each segment is one zstd
frame that declares its size, compressed with the listed base ranges (joined) as a raw
prefix dictionary, like `zstd --patch-from` but with the reference bounded. blob offsets
count from the start of the payload. The trailer catches a damaged or truncated delta
before any work; trust comes from the target's sha256 in signed release metadata, which
`apply_delta` always checks at the end.

Every number in the header is checked against the file sizes and the limits below before
any output is written, so a hostile header cannot make a reader allocate more than they
allow. Peak memory while applying, besides the interpreter: for a literal segment about
2 x prefix + 2 x segment (zstd keeps its own copy of the prefix), under 28 MiB; for a
tensor chunk about 100 bytes per element in work arrays, 6 MiB for CHUNK_ELEMENTS (25 MiB
for MAX_CHUNK_ELEMENTS), plus up to about 9 MiB for a predictor's factors (MAX_FACTOR_ELEMENTS);
a COPY streams in 1 MiB pieces. Never a whole file.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import msgpack

from edgefleet.errors import InvalidInput

MAGIC = b"EFDELTA\n"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_PREAMBLE = struct.Struct("<8sHI")
TRAILER_BYTES = 32
MAX_HEADER_BYTES = 64 << 20
MAX_SEGMENT_BYTES = 4 << 20
MAX_PREFIX_BYTES = 8 << 20
# Tensor chunks, in elements: decoding works on a few 64-bit arrays of one chunk, so the
# element count, not the byte size, decides its memory. Writers use CHUNK_ELEMENTS.
CHUNK_ELEMENTS = 1 << 16
MAX_CHUNK_ELEMENTS = 1 << 18
_HASH_PIECE_BYTES = 1 << 20
# Predictor factors: decoding holds A (rows x rank) and B (rank x cols) as float64, and a
# chunk's rows of A @ B (a chunk plus two rows), so these bound its memory to about 9 MiB.
MAX_RANK = 64
MAX_MULTIPLIER = 1 << 24
MAX_FACTOR_ELEMENTS = 1 << 18

CORRUPT_DELTA = "corrupt_delta"
UNSUPPORTED_DELTA = "unsupported_delta"


@dataclass(frozen=True)
class ElementKind:
    """How a tensor's bytes are numbers. `exponent_bits` is 0 for integers and raw bytes."""

    name: str
    code: int
    itemsize: int
    exponent_bits: int = 0
    mantissa_bits: int = 0
    signed: bool = False

    @property
    def is_float(self) -> bool:
        return self.exponent_bits > 0

    @property
    def bits(self) -> int:
        return self.itemsize * 8


KINDS: dict[str, ElementKind] = {
    k.name: k
    for k in (
        ElementKind("bytes", 0, 1),
        ElementKind("u8", 1, 1),
        ElementKind("i8", 2, 1, signed=True),
        ElementKind("u16", 3, 2),
        ElementKind("i16", 4, 2, signed=True),
        ElementKind("u32", 5, 4),
        ElementKind("i32", 6, 4, signed=True),
        ElementKind("u64", 7, 8),
        ElementKind("i64", 8, 8, signed=True),
        ElementKind("f16", 9, 2, 5, 10),
        ElementKind("bf16", 10, 2, 8, 7),
        ElementKind("f32", 11, 4, 8, 23),
        ElementKind("f64", 12, 8, 11, 52),
    )
}
KIND_BY_CODE = {k.code: k for k in KINDS.values()}


class OpCode(IntEnum):
    COPY = 0
    LITERAL = 1
    TENSOR = 2


@dataclass(frozen=True)
class CopyOp:
    old_offset: int
    length: int


@dataclass(frozen=True)
class LiteralOp:
    length: int


@dataclass(frozen=True)
class LowRank:
    """Where a tensor's predictor factors are, and how to scale them (delta_predictor)."""

    rows: int
    cols: int
    rank: int
    unit: float
    multipliers: tuple[int, ...]
    blob: tuple[int, int]


@dataclass(frozen=True)
class TensorOp:
    name: str
    kind: ElementKind
    count: int
    old_offset: int | None
    chunk_elements: int
    chunks: tuple[tuple[int, int], ...]
    predictor: LowRank | None = None

    @property
    def length(self) -> int:
        return self.count * self.kind.itemsize


Op = CopyOp | LiteralOp | TensorOp


@dataclass(frozen=True)
class Segment:
    size: int
    blob: tuple[int, int]
    prefix: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class DeltaHeader:
    base_size: int
    base_sha256: str
    target_size: int
    target_sha256: str
    segments: tuple[Segment, ...]
    ops: tuple[Op, ...]


def corrupt(message: str) -> InvalidInput:
    return InvalidInput(f"corrupt delta: {message}", code=CORRUPT_DELTA)


# ------------------------------------------------------------------ header <-> msgpack


def encode_header(header: DeltaHeader) -> bytes:
    ops: list[list[Any]] = []
    for op in header.ops:
        if isinstance(op, CopyOp):
            ops.append([OpCode.COPY, op.old_offset, op.length])
        elif isinstance(op, LiteralOp):
            ops.append([OpCode.LITERAL, op.length])
        else:
            old = -1 if op.old_offset is None else op.old_offset
            chunks = [list(c) for c in op.chunks]
            predictor = None
            if op.predictor is not None:
                p = op.predictor
                predictor = [p.rows, p.cols, p.rank, p.unit, list(p.multipliers), *p.blob]
            ops.append(
                [
                    OpCode.TENSOR,
                    *(op.name, op.kind.code, op.count, old, op.chunk_elements, chunks),
                    predictor,
                ]
            )
    document = {
        "base": [header.base_size, bytes.fromhex(header.base_sha256)],
        "target": [header.target_size, bytes.fromhex(header.target_sha256)],
        "segments": [
            [s.size, s.blob[0], s.blob[1], [list(r) for r in s.prefix]] for s in header.segments
        ],
        "ops": ops,
    }
    packed: bytes = msgpack.packb(document, use_bin_type=True)
    return packed


def decode_header(raw: bytes, payload_bytes: int, version: int = VERSION) -> DeltaHeader:
    """Parse and check a header; every offset must fall inside the payload or the base."""
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        base_size, base_sha = _size_and_hash(doc["base"])
        target_size, target_sha = _size_and_hash(doc["target"])
        segments = tuple(_segment(s, base_size, payload_bytes) for s in doc["segments"])
        ops = tuple(_op(o, base_size, payload_bytes, version) for o in doc["ops"])
    except InvalidInput:
        raise
    except (ValueError, TypeError, KeyError, IndexError, msgpack.UnpackException) as e:
        raise corrupt(f"unreadable header ({type(e).__name__})") from None
    if sum(_op_length(op) for op in ops) != target_size:
        raise corrupt("the operations do not add up to the target's size")
    literal_bytes = sum(op.length for op in ops if isinstance(op, LiteralOp))
    if literal_bytes != sum(s.size for s in segments):
        raise corrupt("the literal operations do not match the literal segments")
    return DeltaHeader(base_size, base_sha, target_size, target_sha, segments, ops)


def _op_length(op: Op) -> int:
    return op.length


def _int(value: object, low: int = 0, high: int = 1 << 62) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise corrupt(f"a number out of range: {value!r:.40}")
    return value


def _range(value: object, limit: int) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise corrupt("a range is not [offset, length]")
    offset, length = _int(value[0]), _int(value[1])
    if offset + length > limit:
        raise corrupt("a range overruns its file")
    return offset, length


def _size_and_hash(value: object) -> tuple[int, str]:
    if not isinstance(value, list) or len(value) != 2:
        raise corrupt("a file is not [size, sha256]")
    digest = value[1]
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise corrupt("a sha256 is not 32 bytes")
    return _int(value[0]), digest.hex()


def _segment(value: object, base_size: int, payload_bytes: int) -> Segment:
    if not isinstance(value, list) or len(value) != 4 or not isinstance(value[3], list):
        raise corrupt("a segment is malformed")
    size = _int(value[0], 0, MAX_SEGMENT_BYTES)
    blob = _range(value[1:3], payload_bytes)
    prefix = tuple(_range(r, base_size) for r in value[3])
    if sum(length for _, length in prefix) > MAX_PREFIX_BYTES:
        raise corrupt("a segment's prefix is over the limit")
    return Segment(size, blob, prefix)


def _op(value: object, base_size: int, payload_bytes: int, version: int) -> Op:
    if not isinstance(value, list) or not value:
        raise corrupt("an operation is malformed")
    code = value[0]
    if code == OpCode.COPY and len(value) == 3:
        old_offset, length = _range(value[1:3], base_size)
        return CopyOp(old_offset, length)
    if code == OpCode.LITERAL and len(value) == 2:
        return LiteralOp(_int(value[1]))
    if code == OpCode.TENSOR and len(value) == (7 if version == 1 else 8):
        _, name, kind_code, count, old_offset, chunk_elements, chunks = value[:7]
        kind = KIND_BY_CODE.get(kind_code) if isinstance(kind_code, int) else None
        if not isinstance(name, str) or kind is None or not isinstance(chunks, list):
            raise corrupt("a tensor operation is malformed")
        count = _int(count)
        chunk_elements = _int(chunk_elements, 1, MAX_CHUNK_ELEMENTS)
        if len(chunks) != -(-count // chunk_elements):
            raise corrupt("a tensor has the wrong number of chunks")
        old = None
        if old_offset != -1:
            old = _range([old_offset, count * kind.itemsize], base_size)[0]
        blobs = tuple(_range(c, payload_bytes) for c in chunks)
        predictor = None
        if len(value) == 8 and value[7] is not None:
            predictor = _predictor(value[7], kind, count, old, payload_bytes)
        return TensorOp(name, kind, count, old, chunk_elements, blobs, predictor)
    raise corrupt(f"unknown operation {code!r:.20}")


def _predictor(
    value: object, kind: ElementKind, count: int, old: int | None, payload_bytes: int
) -> LowRank:
    if not isinstance(value, list) or len(value) != 7 or not isinstance(value[4], list):
        raise corrupt("a predictor is malformed")
    rows, cols, rank = _int(value[0], 1), _int(value[1], 1), _int(value[2], 1, MAX_RANK)
    unit = value[3]
    if old is None or not kind.is_float or rows * cols != count:
        raise corrupt("a predictor that does not fit its tensor")
    if rank * max(rows, cols) > MAX_FACTOR_ELEMENTS:
        raise corrupt("a predictor's factors are over the limit")
    if not isinstance(unit, float) or not 0.0 < unit < float("inf"):
        raise corrupt("a predictor's unit is not a positive number")
    multipliers = tuple(_int(m, 0, MAX_MULTIPLIER) for m in value[4])
    if len(multipliers) != rank:
        raise corrupt("a predictor has the wrong number of multipliers")
    return LowRank(rows, cols, rank, unit, multipliers, _range(value[5:7], payload_bytes))


# ------------------------------------------------------------------ reading and writing


def sha256_of_file(path: Path, limit: int | None = None) -> str:
    """sha256 (hex) of a file's first `limit` bytes (all of it if None), read in pieces."""
    digest = hashlib.sha256()
    remaining = path.stat().st_size if limit is None else limit
    with path.open("rb") as f:
        while remaining > 0:
            piece = f.read(min(_HASH_PIECE_BYTES, remaining))
            if not piece:
                break
            digest.update(piece)
            remaining -= len(piece)
    return digest.hexdigest()


class DeltaReader:
    """An open delta whose checksum and header have been verified; reads payload blobs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size_bytes = path.stat().st_size
        self._file: BinaryIO = path.open("rb")
        try:
            self.header = self._verify()
        except BaseException:
            self._file.close()
            raise

    def _verify(self) -> DeltaHeader:
        if self.size_bytes < _PREAMBLE.size + TRAILER_BYTES:
            raise corrupt(f"{self.size_bytes} bytes is too short to be a delta")
        magic, version, header_len = _PREAMBLE.unpack(self._file.read(_PREAMBLE.size))
        if magic != MAGIC:
            raise corrupt("not an edgefleet delta (bad magic)")
        if version not in READABLE_VERSIONS:
            known = ", ".join(str(v) for v in READABLE_VERSIONS)
            raise InvalidInput(
                f"delta format version {version} is not supported (this reader knows {known})",
                code=UNSUPPORTED_DELTA,
            )
        self._file.seek(self.size_bytes - TRAILER_BYTES)
        recorded = self._file.read(TRAILER_BYTES).hex()
        if sha256_of_file(self.path, self.size_bytes - TRAILER_BYTES) != recorded:
            raise corrupt("checksum mismatch: the delta is truncated or damaged")
        self.payload_start = _PREAMBLE.size + header_len
        payload_bytes = self.size_bytes - TRAILER_BYTES - self.payload_start
        if header_len > MAX_HEADER_BYTES or payload_bytes < 0:
            raise corrupt("bad header length")
        self._file.seek(_PREAMBLE.size)
        return decode_header(self._file.read(header_len), payload_bytes, version)

    def read_blob(self, blob: tuple[int, int]) -> bytes:
        offset, length = blob
        self._file.seek(self.payload_start + offset)
        data = self._file.read(length)
        if len(data) != length:
            raise corrupt("a blob is cut short")
        return data

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DeltaReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PayloadSpool:
    """Payload blobs appended to a scratch file while the header is still being planned."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.size_bytes = 0

    def append(self, blob: bytes) -> tuple[int, int]:
        self._file.write(blob)
        offset = self.size_bytes
        self.size_bytes += len(blob)
        return offset, len(blob)

    def write_delta(self, header: DeltaHeader, out: BinaryIO) -> int:
        """Write the whole delta (preamble, header, payload, checksum); return its size."""
        raw_header = encode_header(header)
        digest = hashlib.sha256()

        def emit(data: bytes) -> None:
            out.write(data)
            digest.update(data)

        emit(_PREAMBLE.pack(MAGIC, VERSION, len(raw_header)))
        emit(raw_header)
        self._file.flush()
        self._file.seek(0)
        while piece := self._file.read(_HASH_PIECE_BYTES):
            emit(piece)
        out.write(digest.digest())
        out.flush()
        os.fsync(out.fileno())
        return _PREAMBLE.size + len(raw_header) + self.size_bytes + TRAILER_BYTES
