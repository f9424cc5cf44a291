"""Stream codecs: how one byte stream inside a delta is squeezed, and safely restored.

A delta is made of many small byte streams (a plane of exponent bytes, a bitmap of changed
elements, a run of residuals). Each is stored with whichever of three codecs made it
smallest, tagged with one byte:

    STORED  0   the bytes as they are (for noise, which no coder shrinks)
    ZSTD    1   a zstd frame (fast to decode; Huffman literals, good for wide alphabets)
    LZMA    2   a raw LZMA2 stream with fixed filters (an adaptive binary range coder that
                goes well below one bit per byte on sparse, skewed streams)

Restoring never allocates more than the size the caller expects, so a hostile stream cannot
inflate past it; a stream that does not restore to exactly that size is `corrupt_delta`.
"""

from __future__ import annotations

import lzma
from enum import IntEnum

import zstandard

from edgefleet.artifacts.delta_format import CORRUPT_DELTA
from edgefleet.errors import InvalidInput

# Part of the format: a decoder must use exactly these filters. lc=lp=pb=0 because the
# streams are planes of numbers, where position and previous-byte context only dilute
# the statistics; a 1 MiB dictionary covers any stream of one chunk.
_LZMA_DICT_BYTES = 1 << 20
_LZMA_FILTERS = [
    {"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": _LZMA_DICT_BYTES, "lc": 0, "lp": 0, "pb": 0}
]
_LZMA_FILTERS_FAST = [
    {"id": lzma.FILTER_LZMA2, "preset": 1, "dict_size": _LZMA_DICT_BYTES, "lc": 0, "lp": 0, "pb": 0}
]
# zstd frames inside a chunk never need a larger window; refusing larger ones bounds memory.
_ZSTD_MAX_WINDOW_BYTES = 1 << 25
# A stream that the fastest pass cannot shrink below this fraction is stored as it is.
_NOISE_RATIO = 0.995
# Below this size, a codec's own framing costs more than it can save.
_MIN_COMPRESSIBLE_BYTES = 16


class StreamCodec(IntEnum):
    STORED = 0
    ZSTD = 1
    LZMA = 2


def pack_stream(data: bytes, *, thorough: bool = True) -> tuple[StreamCodec, bytes]:
    """The smallest encoding of `data` among the codecs tried; `thorough` tries harder.

    >>> pack_stream(bytes(1000))[0] in (StreamCodec.ZSTD, StreamCodec.LZMA)
    True
    """
    best: tuple[StreamCodec, bytes] = (StreamCodec.STORED, data)
    if len(data) < _MIN_COMPRESSIBLE_BYTES:
        return best
    # Raw low-order bits are noise; one fast pass proves it before the slow coders run.
    if estimate_packed_size(data) >= len(data) * _NOISE_RATIO:
        return best
    level = 19 if thorough else 3
    candidates = [(StreamCodec.ZSTD, zstandard.ZstdCompressor(level=level).compress(data))]
    filters = _LZMA_FILTERS if thorough else _LZMA_FILTERS_FAST
    candidates.append(
        (StreamCodec.LZMA, lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters))
    )
    for codec, payload in candidates:
        if len(payload) < len(best[1]):
            best = (codec, payload)
    return best


def estimate_packed_size(data: bytes) -> int:
    """A quick estimate of `len(pack_stream(data)[1])`, for choosing between transforms."""
    if len(data) < _MIN_COMPRESSIBLE_BYTES:
        return len(data)
    return min(len(data), len(zstandard.ZstdCompressor(level=1).compress(data)))


def unpack_stream(codec: int, payload: bytes, size: int) -> bytes:
    """Restore a stream of exactly `size` bytes; InvalidInput `corrupt_delta` otherwise."""
    try:
        if codec == StreamCodec.STORED:
            data = payload
        elif codec == StreamCodec.ZSTD:
            # A frame's declared size decides how much zstd allocates, so it is checked
            # before decoding; frames written here always declare it.
            if zstandard.frame_content_size(payload) != size:
                raise InvalidInput("a zstd stream declares the wrong size", code=CORRUPT_DELTA)
            decoder = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW_BYTES)
            data = decoder.decompress(payload, allow_extra_data=False)
        elif codec == StreamCodec.LZMA:
            lzma_decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
            data = lzma_decoder.decompress(payload, max_length=size)
            if not lzma_decoder.eof and not lzma_decoder.needs_input:
                raise InvalidInput("an lzma stream is longer than declared", code=CORRUPT_DELTA)
        else:
            raise InvalidInput(f"unknown stream codec {codec}", code=CORRUPT_DELTA)
    except (zstandard.ZstdError, lzma.LZMAError) as e:
        raise InvalidInput(
            f"a compressed stream does not decode: {e}", code=CORRUPT_DELTA
        ) from None
    if len(data) != size:
        raise InvalidInput(
            f"a stream decoded to {len(data)} bytes, expected {size}", code=CORRUPT_DELTA
        )
    return data
