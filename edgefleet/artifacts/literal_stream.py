"""The literal stream: the bytes of a target that no COPY or TENSOR operation produces.

The graph and names of an ONNX model, small tensors, and all of any other kind of file.
It is cut into segments of at most MAX_SEGMENT_BYTES, each one zstd frame compressed
with part of the base as a raw-content dictionary (a "prefix"), which is what
`zstd --patch-from` does with the whole base. Bounding the prefix to MAX_PREFIX_BYTES
keeps the memory of applying bounded however large the file, at the price of finding
only what moved less than a few MiB; anchors sampled from each segment and searched in
the base choose the window, so an insertion early in a file does not lose the rest.

A segment's prefix is a list of base ranges, joined: for an ONNX model, the base's own
non-tensor bytes (its "reference"); for other files, one window of the whole base.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator

import zstandard

from edgefleet.artifacts.delta_format import MAX_PREFIX_BYTES, Segment, corrupt

# A whole file, mapped rather than read: slicing either gives bytes.
Buffer = bytes | mmap.mmap
Ranges = tuple[tuple[int, int], ...]

_ANCHORS = 8
_ANCHOR_BYTES = 32
_ANCHOR_REACH_BYTES = 16 << 20
# zstd refuses tiny dictionaries, and they would not help anyway.
_MIN_PREFIX_BYTES = 64
_ZSTD_MAX_WINDOW_BYTES = 1 << 25


def encode_segments(
    old: Buffer,
    new: Buffer,
    ranges: list[tuple[int, int]],
    reference: list[tuple[int, int]],
    thorough: bool,
    segment_bytes: int,
) -> Iterator[tuple[int, Ranges, bytes]]:
    """(size, prefix ranges, zstd frame) for each segment of the `ranges` of `new` joined,
    compressed against a window of the `reference` ranges of `old` joined."""
    # Materialise the reference only when it is scattered; a whole file stays mapped.
    if len(reference) == 1 and reference[0] == (0, len(old)):
        virtual = old
    else:
        virtual = b"".join(old[a : a + n] for a, n in reference)
    for new_start, data in _cut(new, ranges, segment_bytes):
        lo, hi = _choose_window(virtual, data, new_start, len(new))
        frame = _compress_segment(bytes(virtual[lo:hi]), data, thorough)
        yield len(data), tuple(_to_old_ranges(reference, lo, hi)), frame


def _cut(data: Buffer, ranges: list[tuple[int, int]], size: int) -> Iterator[tuple[int, bytes]]:
    """The bytes of `ranges` joined, in pieces of `size`, each with where it starts in data."""
    pieces: list[bytes] = []
    held = 0
    first = 0
    for start, end in ranges:
        while start < end:
            if not pieces:
                first = start
            take = min(end - start, size - held)
            pieces.append(bytes(data[start : start + take]))
            held += take
            start += take
            if held == size:
                yield first, b"".join(pieces)
                pieces, held = [], 0
    if pieces:
        yield first, b"".join(pieces)


def _choose_window(virtual: Buffer, data: bytes, new_start: int, new_size: int) -> tuple[int, int]:
    """The [start, end) of `virtual`, at most MAX_PREFIX_BYTES, most likely to contain `data`'s
    source: where sampled pieces of `data` are found, else at the proportional position."""
    if len(virtual) <= MAX_PREFIX_BYTES:
        return 0, len(virtual)
    guess = new_start * len(virtual) // max(new_size, 1)
    shifts = []
    for i in range(_ANCHORS):
        at = i * len(data) // _ANCHORS
        anchor = data[at : at + _ANCHOR_BYTES]
        if len(anchor) < _ANCHOR_BYTES or len(set(anchor)) < 8:
            continue  # too short or too repetitive to say where it came from
        lo = max(0, guess + at - _ANCHOR_REACH_BYTES)
        found = virtual.find(anchor, lo, guess + at + _ANCHOR_REACH_BYTES)
        if found >= 0:
            shifts.append(found - at)
    start = sorted(shifts)[len(shifts) // 2] if shifts else guess
    start -= (MAX_PREFIX_BYTES - len(data)) // 2
    start = max(0, min(start, len(virtual) - MAX_PREFIX_BYTES))
    return start, start + MAX_PREFIX_BYTES


def _to_old_ranges(reference: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The ranges of the old file behind [lo, hi) of the joined `reference` ranges."""
    ranges, position = [], 0
    for offset, length in reference:
        a, b = max(lo, position), min(hi, position + length)
        if a < b:
            ranges.append((offset + a - position, b - a))
        position += length
    return ranges


def _compress_segment(prefix: bytes, data: bytes, thorough: bool) -> bytes:
    level = 19 if thorough else 9
    window_log = max(10, (len(prefix) + len(data)).bit_length())
    params = zstandard.ZstdCompressionParameters.from_level(
        level, source_size=len(data), window_log=window_log, write_content_size=True
    )
    if len(prefix) < _MIN_PREFIX_BYTES:
        return zstandard.ZstdCompressor(compression_params=params).compress(data)
    reference = zstandard.ZstdCompressionDict(prefix, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    compressor = zstandard.ZstdCompressor(dict_data=reference, compression_params=params)
    return compressor.compress(data)


class LiteralStream:
    """The literal stream while applying, one decompressed segment in memory at a time.

    `read_blob(range)` reads a segment's frame from the delta's payload and
    `read_base(offset, length)` reads from the base, both raising corrupt_delta when cut short.
    """

    def __init__(
        self,
        segments: tuple[Segment, ...],
        read_blob: Callable[[tuple[int, int]], bytes],
        read_base: Callable[[int, int], bytes],
    ) -> None:
        self._read_blob, self._read_base = read_blob, read_base
        self._segments = iter(segments)
        self._data = memoryview(b"")
        self._position = 0

    def read(self, size: int) -> bytes:
        while self._position == len(self._data):
            segment = next(self._segments, None)
            if segment is None:
                raise corrupt("the literal stream ends early")
            self._data = memoryview(self._load(segment))
            self._position = 0
        piece = self._data[self._position : self._position + size]
        self._position += len(piece)
        return bytes(piece)

    def _load(self, segment: Segment) -> bytes:
        frame = self._read_blob(segment.blob)
        prefix = b"".join(self._read_base(a, n) for a, n in segment.prefix)
        try:
            if zstandard.frame_content_size(frame) != segment.size:
                raise corrupt("a literal segment declares the wrong size")
            if len(prefix) < _MIN_PREFIX_BYTES:
                decoder = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW_BYTES)
            else:
                reference = zstandard.ZstdCompressionDict(
                    prefix, dict_type=zstandard.DICT_TYPE_RAWCONTENT
                )
                decoder = zstandard.ZstdDecompressor(
                    dict_data=reference, max_window_size=_ZSTD_MAX_WINDOW_BYTES
                )
            data = decoder.decompress(frame, allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise corrupt(f"a literal segment does not decode: {e}") from None
        if len(data) != segment.size:
            raise corrupt("a literal segment has the wrong size")
        return data
