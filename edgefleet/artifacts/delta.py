"""Deltas between two versions of an artifact: create one from two files, apply one safely.

    create_delta(old, new, out)                          plan, encode, write `out` atomically
    apply_delta(old, delta, out, expected_sha256=...)    verify, stream, check, rename
    read_delta_info(delta)                               what a delta turns into what

Creation plans the new file as a sequence of operations (delta_format): an ONNX model's
tensor payloads (found by onnx_layout) become COPY operations when unchanged and TENSOR
operations otherwise, encoded number-wise against the same tensor of the old model
(tensor_codec); a weight matrix's operation may also carry low-rank factors that predict
its update (delta_predictor), kept only when they pay for themselves. Everything else -
the graph, names, small tensors, and the whole of a non-ONNX file - goes into the literal
stream (literal_stream), compressed with zstd against a bounded window of the old file,
the way `zstd --patch-from` does. Unchanged 4 MiB pieces of a non-ONNX file become COPY
operations.

Applying never needs `onnx` (numpy only when the delta has TENSOR operations). It refuses
before writing anything when the delta is damaged (checksum), does not produce
`expected_sha256`, or was made from another base (size and sha256 of `old`). It then writes
into a temporary file beside `out`, hashing as it goes, and renames it into place only when
the result's sha256 is the expected one; on any failure nothing is left behind.

Peak memory while applying, measured above the interpreter with its imports (numpy alone
is 12 MiB of the 33 MiB that costs): 1-7 MiB for the benchmark's ONNX models, bounded by
about 6 MiB per tensor chunk (plus at most about 9 MiB for a weight matrix's predictor
factors, under 1 MiB on the benchmark's trained MLP) and, for literal segments, by
2 x 8 MiB of prefix plus 2 x 4 MiB of segment (27 MiB measured on a 40 MB file); never a
whole file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import mmap
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from edgefleet.artifacts.delta_format import (
    CHUNK_ELEMENTS,
    KINDS,
    MAX_FACTOR_ELEMENTS,
    MAX_SEGMENT_BYTES,
    UNSUPPORTED_DELTA,
    CopyOp,
    DeltaHeader,
    DeltaReader,
    LiteralOp,
    LowRank,
    Op,
    PayloadSpool,
    Segment,
    TensorOp,
    corrupt,
    sha256_of_file,
)
from edgefleet.artifacts.literal_stream import Buffer, LiteralStream, encode_segments
from edgefleet.artifacts.onnx_layout import TensorSpan, find_tensor_spans
from edgefleet.errors import InvalidInput

if TYPE_CHECKING:
    from edgefleet.artifacts.delta_predictor import Factors

BASE_MISMATCH = "delta_base_mismatch"
TARGET_MISMATCH = "delta_target_mismatch"
OUTPUT_MISMATCH = "delta_output_mismatch"

# Below this size a tensor's own operation costs more than compressing it with the graph.
MIN_TENSOR_BYTES = 256
_PIECE_BYTES = 1 << 20


@dataclass(frozen=True)
class DeltaInfo:
    """Sizes and hashes of a delta, its base and its target."""

    base_size: int
    base_sha256: str
    target_size: int
    target_sha256: str
    delta_size: int
    tensor_ops: int
    copy_ops: int
    literal_bytes: int

    @property
    def ratio(self) -> float:
        """Delta size as a fraction of the target's size."""
        return self.delta_size / self.target_size if self.target_size else 0.0


def read_delta_info(delta: Path) -> DeltaInfo:
    """Verify a delta's checksum and header and describe it."""
    with DeltaReader(delta) as reader:
        return _info(reader.header, reader.size_bytes)


def _info(header: DeltaHeader, delta_size: int) -> DeltaInfo:
    return DeltaInfo(
        base_size=header.base_size,
        base_sha256=header.base_sha256,
        target_size=header.target_size,
        target_sha256=header.target_sha256,
        delta_size=delta_size,
        tensor_ops=sum(isinstance(op, TensorOp) for op in header.ops),
        copy_ops=sum(isinstance(op, CopyOp) for op in header.ops),
        literal_bytes=sum(s.size for s in header.segments),
    )


# ------------------------------------------------------------------ creating


def create_delta(old: Path, new: Path, out: Path, *, thorough: bool = True) -> DeltaInfo:
    """Write a delta that turns `old` into `new` to `out` (atomically); describe it.

    `thorough=False` uses faster compressor settings: several times faster for the
    byte-level parts (zstd level 9, not 19), hence for non-ONNX files; little faster for
    tensors; a delta up to a few percent larger.
    """
    with _mapped(old) as old_data, _mapped(new) as new_data:
        header_base = (len(old_data), hashlib.sha256(old_data).hexdigest())
        header_target = (len(new_data), hashlib.sha256(new_data).hexdigest())
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent) as scratch:
            spool = PayloadSpool(scratch)
            planner = _Planner(old_data, new_data, spool, thorough)
            ops, segments = planner.plan()
            header = DeltaHeader(*header_base, *header_target, tuple(segments), tuple(ops))
            tmp = _temporary_sibling(out)
            try:
                with tmp.open("wb") as f:
                    size = spool.write_delta(header, f)
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
    _fsync_directory(out.parent)
    return _info(header, size)


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[Buffer]:
    """The file's bytes, memory-mapped (mmap refuses empty files, so those are b"")."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            yield mapped


class _Planner:
    def __init__(self, old: Buffer, new: Buffer, spool: PayloadSpool, thorough: bool) -> None:
        self.old, self.new, self.spool, self.thorough = old, new, spool, thorough
        self.ops: list[Op] = []
        self.literal: list[tuple[int, int]] = []  # ranges of `new` in the literal stream

    def plan(self) -> tuple[list[Op], list[Segment]]:
        new_spans = [s for s in find_tensor_spans(self.new) if s.length >= MIN_TENSOR_BYTES]
        if new_spans:
            old_spans = [s for s in find_tensor_spans(self.old) if s.length >= MIN_TENSOR_BYTES]
            self._plan_model(new_spans, old_spans)
            reference = _complement(old_spans, len(self.old))
        else:
            self._plan_file()
            reference = [(0, len(self.old))] if self.old else []
        return self.ops, self._encode_literal(reference)

    def _add_literal(self, start: int, end: int) -> None:
        if end <= start:
            return
        if self.ops and isinstance(self.ops[-1], LiteralOp):
            self.ops[-1] = LiteralOp(self.ops[-1].length + end - start)
        else:
            self.ops.append(LiteralOp(end - start))
        self.literal.append((start, end))

    def _plan_file(self) -> None:
        for start in range(0, len(self.new), MAX_SEGMENT_BYTES):
            end = min(start + MAX_SEGMENT_BYTES, len(self.new))
            if end <= len(self.old) and self.old[start:end] == self.new[start:end]:
                self.ops.append(CopyOp(start, end - start))
            else:
                self._add_literal(start, end)

    def _plan_model(self, new_spans: list[TensorSpan], old_spans: list[TensorSpan]) -> None:
        predecessors = _match_predecessors(new_spans, old_spans)
        position = 0
        for span, before in zip(new_spans, predecessors, strict=True):
            self._add_literal(position, span.offset)
            position = span.offset + span.length
            new_bytes = self.new[span.offset : position]
            if before is not None and self.old[before.offset : before.offset + span.length] == (
                new_bytes
            ):
                self.ops.append(CopyOp(before.offset, span.length))
            else:
                self.ops.append(self._encode_tensor(span, before))
        self._add_literal(position, len(self.new))

    def _encode_tensor(self, span: TensorSpan, before: TensorSpan | None) -> TensorOp:
        from edgefleet.artifacts.tensor_codec import encode_chunk

        kind = KINDS[span.element]
        step = CHUNK_ELEMENTS * kind.itemsize
        chosen = None if before is None else self._choose_predictor(span, before)
        factors = None if chosen is None else chosen[1]
        chunks = []
        for start in range(0, span.length, step):
            end = min(start + step, span.length)
            new_chunk = self.new[span.offset + start : span.offset + end]
            old_chunk = predicted = None
            if before is not None:
                old_chunk = self.old[before.offset + start : before.offset + end]
                if factors is not None:
                    predicted = factors.predict(kind, old_chunk, start // kind.itemsize)
            blob = encode_chunk(
                kind, new_chunk, old_chunk, thorough=self.thorough, predicted=predicted
            )
            chunks.append(self.spool.append(blob))
        old_offset = None if before is None else before.offset
        count = span.length // kind.itemsize
        predictor = None
        if chosen is not None:
            low_rank, _, factor_blob = chosen
            predictor = dataclasses.replace(low_rank, blob=self.spool.append(factor_blob))
        return TensorOp(
            span.name, kind, count, old_offset, CHUNK_ELEMENTS, tuple(chunks), predictor
        )

    def _choose_predictor(
        self, span: TensorSpan, before: TensorSpan
    ) -> tuple[LowRank, Factors, bytes] | None:
        """The low-rank predictor that saves most by estimate, if one saves anything.

        Ranks are tried smallest first, stopping when a larger rank saves less; a chunk
        keeps its plain encoding wherever the prediction does not help it."""
        from edgefleet.artifacts import delta_predictor as lowrank
        from edgefleet.artifacts.tensor_codec import estimate_chunk, estimate_predicted_chunk

        kind = KINDS[span.element]
        if not lowrank.supports(kind, span.dims):
            return None
        rows, cols = lowrank.matrix_shape(span.dims)
        ranks = [r for r in lowrank.RANKS if r * max(rows, cols) <= MAX_FACTOR_ELEMENTS]
        if not ranks or rows * cols * kind.itemsize != span.length:
            return None
        old = self.old[before.offset : before.offset + span.length]
        new = self.new[span.offset : span.offset + span.length]
        fitted = lowrank.fit(kind, old, new, rows, cols, max(ranks))
        if fitted is None:
            return None
        step = CHUNK_ELEMENTS * kind.itemsize
        pieces = [
            (start, old[start : start + step], new[start : start + step])
            for start in range(0, span.length, step)
        ]
        plain = [estimate_chunk(kind, n, o) for _, o, n in pieces]
        best: tuple[LowRank, Factors, bytes] | None = None
        best_size = sum(plain)
        for rank in ranks:
            quantized = lowrank.quantize(*fitted, rank)
            if quantized is None:
                break
            a_q, b_q, unit, multipliers = quantized
            factors = lowrank.factors_of(a_q, b_q, unit, multipliers)
            blob = lowrank.encode_factors(a_q, b_q, thorough=self.thorough)
            size = len(blob) + 16 + 4 * rank
            for (start, o, n), without in zip(pieces, plain, strict=True):
                predicted = factors.predict(kind, o, start // kind.itemsize)
                size += min(without, estimate_predicted_chunk(kind, n, o, predicted))
            if size >= best_size:
                break
            low_rank = LowRank(rows, cols, rank, unit, tuple(multipliers), (0, 0))
            best, best_size = (low_rank, factors, blob), size
        return best

    def _encode_literal(self, reference: list[tuple[int, int]]) -> list[Segment]:
        segments = []
        encoded = encode_segments(
            self.old, self.new, self.literal, reference, self.thorough, MAX_SEGMENT_BYTES
        )
        for size, prefix, frame in encoded:
            segments.append(Segment(size, self.spool.append(frame), prefix))
        return segments


def _match_predecessors(
    new_spans: list[TensorSpan], old_spans: list[TensorSpan]
) -> list[TensorSpan | None]:
    """For each new tensor, the old tensor to encode it against: by name, else the next
    unmatched one of the same kind and size (a renamed layer)."""
    by_name: dict[str, list[TensorSpan]] = {}
    by_shape: dict[tuple[str, int], list[TensorSpan]] = {}
    for span in reversed(old_spans):  # reversed, so that pop() takes them in file order
        by_name.setdefault(span.name, []).append(span)
        by_shape.setdefault((span.element, span.length), []).append(span)
    taken: set[int] = set()

    def take(candidates: list[TensorSpan], span: TensorSpan) -> TensorSpan | None:
        for i in range(len(candidates) - 1, -1, -1):
            candidate = candidates[i]
            if candidate.offset not in taken and _compatible(candidate, span):
                taken.add(candidate.offset)
                del candidates[i]
                return candidate
        return None

    found = [take(by_name.get(span.name, []), span) for span in new_spans]
    for i, span in enumerate(new_spans):
        if found[i] is None:
            found[i] = take(by_shape.get((span.element, span.length), []), span)
    return found


def _compatible(a: TensorSpan, b: TensorSpan) -> bool:
    return a.element == b.element and a.length == b.length


def _complement(spans: list[TensorSpan], size: int) -> list[tuple[int, int]]:
    ranges, position = [], 0
    for span in spans:
        if span.offset > position:
            ranges.append((position, span.offset - position))
        position = span.offset + span.length
    if size > position:
        ranges.append((position, size - position))
    return ranges


# ------------------------------------------------------------------ applying


def apply_delta(old: Path, delta: Path, out: Path, *, expected_sha256: str) -> DeltaInfo:
    """Rebuild the target from `old` and `delta` into `out`, which must hash to
    `expected_sha256` (from signed metadata); on any failure `out` is left untouched."""
    expected = _normalise_sha256(expected_sha256)
    with DeltaReader(delta) as reader:
        header = reader.header
        if header.target_sha256 != expected:
            raise InvalidInput(
                f"the delta produces sha256 {header.target_sha256}, not the expected {expected}",
                code=TARGET_MISMATCH,
            )
        _check_base(old, header)
        _check_numpy(header)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_sibling(out)
        try:
            with old.open("rb") as base, tmp.open("wb") as target:
                writer = _HashingWriter(target)
                try:
                    _run(header, reader, base, writer)
                except (ValueError, IndexError, OverflowError, TypeError) as e:
                    # The checksum only proves the delta is the one its maker wrote; a
                    # malformed one that slips through surfaces here, as a clear error.
                    raise corrupt(f"cannot apply ({type(e).__name__}: {e})") from None
                digest = writer.digest.hexdigest()
                if writer.size != header.target_size or digest != expected:
                    raise InvalidInput(
                        f"the rebuilt file has sha256 {digest} ({writer.size} bytes), expected "
                        f"{expected} ({header.target_size} bytes)",
                        code=OUTPUT_MISMATCH,
                    )
                target.flush()
                os.fsync(target.fileno())
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_directory(out.parent)
        return _info(header, reader.size_bytes)


def _normalise_sha256(value: str) -> str:
    lowered = value.strip().lower()
    if len(lowered) != 64 or any(c not in "0123456789abcdef" for c in lowered):
        raise InvalidInput(
            f"invalid sha256 {value[:80]!r}: expected 64 hex digits", code="invalid_sha256"
        )
    return lowered


def _check_base(old: Path, header: DeltaHeader) -> None:
    size = old.stat().st_size
    if size == header.base_size and sha256_of_file(old) == header.base_sha256:
        return
    raise InvalidInput(
        f"the delta was made from another base: it needs {header.base_size} bytes with "
        f"sha256 {header.base_sha256}, and {old.name} is not that file",
        code=BASE_MISMATCH,
    )


def _check_numpy(header: DeltaHeader) -> None:
    if not any(isinstance(op, TensorOp) for op in header.ops):
        return
    try:
        import edgefleet.artifacts.tensor_codec  # noqa: F401  (it needs numpy)
    except ImportError:
        raise InvalidInput(
            "this delta has tensor operations, which need numpy; fetch the full file instead",
            code=UNSUPPORTED_DELTA,
        ) from None


class _HashingWriter:
    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)


def _read_base(base: BinaryIO, offset: int, length: int) -> bytes:
    data = os.pread(base.fileno(), length, offset)
    if len(data) != length:
        raise corrupt("a range of the base is cut short")
    return data


def _run(header: DeltaHeader, reader: DeltaReader, base: BinaryIO, out: _HashingWriter) -> None:
    literal = LiteralStream(
        header.segments, reader.read_blob, lambda offset, n: _read_base(base, offset, n)
    )
    for op in header.ops:
        if isinstance(op, CopyOp):
            for start in range(0, op.length, _PIECE_BYTES):
                length = min(_PIECE_BYTES, op.length - start)
                out.write(_read_base(base, op.old_offset + start, length))
        elif isinstance(op, LiteralOp):
            remaining = op.length
            while remaining:
                piece = literal.read(min(remaining, _PIECE_BYTES))
                out.write(piece)
                remaining -= len(piece)
        else:
            _run_tensor(op, reader, base, out)


def _run_tensor(op: TensorOp, reader: DeltaReader, base: BinaryIO, out: _HashingWriter) -> None:
    from edgefleet.artifacts.delta_predictor import decode_factors
    from edgefleet.artifacts.tensor_codec import decode_chunk

    itemsize = op.kind.itemsize
    factors = None
    if op.predictor is not None:
        factors = decode_factors(reader.read_blob(op.predictor.blob), op.predictor)
    for i, blob in enumerate(op.chunks):
        first = i * op.chunk_elements
        count = min(op.chunk_elements, op.count - first)
        old_chunk = predicted = None
        if op.old_offset is not None:
            old_chunk = _read_base(base, op.old_offset + first * itemsize, count * itemsize)
            if factors is not None:
                predicted = factors.predict(op.kind, old_chunk, first)
        out.write(decode_chunk(op.kind, reader.read_blob(blob), old_chunk, count, predicted))


# ------------------------------------------------------------------ files


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
