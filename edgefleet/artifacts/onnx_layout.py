"""ONNX layout: where the tensor payloads sit inside a serialized ONNX model.

Reads the protobuf wire format directly, without importing `onnx`, and never copies a
payload: it only records byte ranges. It visits every place a model keeps tensor data:

    ModelProto.graph, .functions[].node, .training_info[].{initialization, algorithm}
    GraphProto.initializer, .sparse_initializer (values, indices), .node[].attribute
    AttributeProto.t, .tensors, .sparse_tensor(s), and the subgraphs in .g and .graphs

A TensorProto's payload is its `raw_data`, or its packed `float_data` / `double_data`
(little-endian IEEE words, exactly like raw data). Varint-encoded fields (int32_data,
int64_data) have no fixed element width and stay ordinary bytes.

>>> find_tensor_spans(b"not a model")
[]
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass

from edgefleet.artifacts.delta_format import KINDS

# TensorProto.DataType -> element kind (complex numbers are pairs of floats).
_KIND_BY_ONNX_TYPE = {
    1: "f32", 2: "u8", 3: "i8", 4: "u16", 5: "i16", 6: "i32", 7: "i64", 9: "u8",
    10: "f16", 11: "f64", 12: "u32", 13: "u64", 14: "f32", 15: "f64", 16: "bf16",
}  # fmt: skip

_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING = range(8)
# Message -> {field number: message type of that field} for the fields that can hold tensors.
_CHILDREN: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    _NODE: {5: _ATTRIBUTE},
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    _FUNCTION: {7: _NODE},
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
}
_MAX_DEPTH = 64
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass(frozen=True)
class TensorSpan:
    """One tensor payload: `length` bytes at `offset`, elements of kind `element`."""

    name: str
    element: str
    dims: tuple[int, ...]
    offset: int
    length: int


class _NotOnnx(Exception):
    pass


def find_tensor_spans(data: bytes | memoryview | mmap.mmap) -> list[TensorSpan]:
    """Spans of the tensor payloads of an ONNX model, in file order; [] if not ONNX."""
    view = memoryview(data)
    spans: list[TensorSpan] = []
    try:
        fields = {number for number, _, _, _ in _fields(view, 0, len(view))}
        if 7 not in fields:
            return []
        _walk(view, 0, len(view), _MODEL, spans, 0)
    except _NotOnnx:
        return []
    spans.sort(key=lambda s: s.offset)
    return spans


def _varint(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _NotOnnx
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(view: memoryview, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or start, end) for each field of a message."""
    while pos < end:
        key, pos = _varint(view, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _NotOnnx
        if wire == _VARINT:
            value, pos = _varint(view, pos, end)
            yield number, wire, value, pos
        elif wire == _LENGTH:
            length, pos = _varint(view, pos, end)
            if pos + length > end:
                raise _NotOnnx
            yield number, wire, pos, pos + length
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise _NotOnnx
            yield number, wire, 0, pos
        else:
            raise _NotOnnx
    if pos != end:
        raise _NotOnnx


def _walk(
    view: memoryview, start: int, end: int, kind: int, spans: list[TensorSpan], depth: int
) -> None:
    if depth > _MAX_DEPTH:
        raise _NotOnnx
    if kind == _TENSOR:
        _tensor(view, start, end, spans)
        return
    children = _CHILDREN[kind]
    for number, wire, a, b in _fields(view, start, end):
        child = children.get(number)
        if child is not None:
            if wire != _LENGTH:
                raise _NotOnnx
            _walk(view, a, b, child, spans, depth + 1)


def _tensor(view: memoryview, start: int, end: int, spans: list[TensorSpan]) -> None:
    dims: list[int] = []
    data_type = 0
    name = ""
    payload: tuple[int, int, str] | None = None
    for number, wire, a, b in _fields(view, start, end):
        if number == 1 and wire == _VARINT:
            dims.append(a)
        elif number == 1 and wire == _LENGTH:
            pos = a
            while pos < b:
                dim, pos = _varint(view, pos, b)
                dims.append(dim)
        elif number == 2 and wire == _VARINT:
            data_type = a
        elif number == 8 and wire == _LENGTH:
            name = bytes(view[a:b]).decode("utf-8", errors="replace")
        elif number == 9 and wire == _LENGTH:
            payload = (a, b, "")
        elif number == 4 and wire == _LENGTH:
            payload = (a, b, "f32")
        elif number == 10 and wire == _LENGTH:
            payload = (a, b, "f64")
    if payload is None or payload[1] == payload[0]:
        return
    a, b, packed_kind = payload
    element = packed_kind or _KIND_BY_ONNX_TYPE.get(data_type, "bytes")
    if (b - a) % KINDS[element].itemsize:
        element = "bytes"
    spans.append(TensorSpan(name, element, tuple(dims), a, b - a))
