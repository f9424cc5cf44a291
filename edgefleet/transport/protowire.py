"""The protocol buffers wire format, written and read by hand for the few OTLP messages
edgefleet speaks (see `otlp.py`), so neither the control plane nor the agent needs the
protobuf runtime.

A message is a sequence of fields, each a key (`field_number << 3 | wire_type`, a varint)
and a value: a varint (0), 8 little-endian bytes (1), a length-prefixed byte string (2:
strings, bytes, nested messages, packed repeated numbers) or 4 bytes (5). `Writer` appends
fields; `read_fields` walks a message's fields, raising `InvalidInput` on truncated or
malformed input.

>>> w = Writer()
>>> w.varint(1, 150)
>>> bytes(w.data).hex()
'089601'
>>> list(read_fields(b"\\x08\\x96\\x01"))
[(1, 0, 150)]
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from edgefleet.errors import InvalidInput

VARINT = 0
FIXED64 = 1
LENGTH = 2
FIXED32 = 5

_DOUBLE = struct.Struct("<d")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_MASK64 = (1 << 64) - 1


def _bad(why: str) -> InvalidInput:
    return InvalidInput(f"malformed protobuf message: {why}", code="bad_protobuf")


def _put_varint(out: bytearray, value: int) -> None:
    value &= _MASK64
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


class Writer:
    """Appends fields to one message; `data` is the encoded message."""

    def __init__(self) -> None:
        self.data = bytearray()

    def _key(self, number: int, wire_type: int) -> None:
        _put_varint(self.data, number << 3 | wire_type)

    def varint(self, number: int, value: int) -> None:
        """An int32/int64/uint64/bool/enum field (negative numbers take ten bytes)."""
        self._key(number, VARINT)
        _put_varint(self.data, value)

    def fixed64(self, number: int, value: int) -> None:
        self._key(number, FIXED64)
        self.data += _U64.pack(value & _MASK64)

    def double(self, number: int, value: float) -> None:
        self._key(number, FIXED64)
        self.data += _DOUBLE.pack(value)

    def bytes_field(self, number: int, value: bytes | bytearray) -> None:
        self._key(number, LENGTH)
        _put_varint(self.data, len(value))
        self.data += value

    def string(self, number: int, value: str) -> None:
        self.bytes_field(number, value.encode())

    def message(self, number: int, inner: Writer) -> None:
        self.bytes_field(number, inner.data)

    def packed_doubles(self, number: int, values: list[float]) -> None:
        self.bytes_field(number, b"".join(_DOUBLE.pack(v) for v in values))

    def packed_fixed64(self, number: int, values: list[int]) -> None:
        self.bytes_field(number, b"".join(_U64.pack(v) for v in values))


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise _bad("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise _bad("varint longer than ten bytes")


Field = tuple[int, int, int | bytes]


def read_fields(data: bytes | memoryview) -> Iterator[Field]:
    """(field number, wire type, value) of each field: an int for varint and fixed fields
    (raw unsigned bits), bytes for length-delimited ones."""
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise _bad("field number 0")
        if wire_type == VARINT:
            value, pos = _read_varint(data, pos)
            yield number, wire_type, value
        elif wire_type == FIXED64:
            if pos + 8 > end:
                raise _bad("truncated 64-bit field")
            yield number, wire_type, _U64.unpack_from(data, pos)[0]
            pos += 8
        elif wire_type == LENGTH:
            length, pos = _read_varint(data, pos)
            if pos + length > end:
                raise _bad(f"field {number} runs past the end of the message")
            yield number, wire_type, bytes(data[pos : pos + length])
            pos += length
        elif wire_type == FIXED32:
            if pos + 4 > end:
                raise _bad("truncated 32-bit field")
            yield number, wire_type, _U32.unpack_from(data, pos)[0]
            pos += 4
        else:
            raise _bad(f"wire type {wire_type} of field {number} is not supported")


def as_double(bits: int) -> float:
    """A `double` field's value from its raw 64 bits."""
    return float(_DOUBLE.unpack(_U64.pack(bits))[0])


def as_int64(bits: int) -> int:
    """An `int64`/`sfixed64` field's value from its raw unsigned 64 bits."""
    return int(_I64.unpack(_U64.pack(bits))[0])


def as_sint(value: int) -> int:
    """A `sint32`/`sint64` (zigzag) field's value."""
    return (value >> 1) ^ -(value & 1)


def unpack_doubles(data: bytes) -> list[float]:
    if len(data) % 8:
        raise _bad("packed doubles of a length not a multiple of 8")
    return [v for (v,) in _DOUBLE.iter_unpack(data)]


def unpack_fixed64(data: bytes) -> list[int]:
    if len(data) % 8:
        raise _bad("packed fixed64 of a length not a multiple of 8")
    return [v for (v,) in _U64.iter_unpack(data)]


def unpack_varints(data: bytes) -> list[int]:
    values: list[int] = []
    pos = 0
    while pos < len(data):
        value, pos = _read_varint(data, pos)
        values.append(value)
    return values
