"""The two encodings of a protocol message, and the checks every decoded message passes.

A message is a frozen dataclass; its fields carry their bounds (`bounded`). From the type
hints and bounds of each class one encoder and one decoder per encoding are compiled once
and cached, so both encodings check exactly the same things:

- JSON (the HTTP wire): an object with the field names as keys; a field marked
  `omit_none` is left out while it is None (today's wire leaves those out).
- msgpack (MQTT): positional arrays, the fields in declaration order, trailing fields
  that hold their default left off; the top level is `[PROTOCOL_VERSION, code, *fields]`.

A decoder refuses what does not fit with InvalidInput naming the field's path
(`report.workloads.replicas[2].state: ...`), never KeyError or TypeError. Messages a
device sends are strict (unknown fields refused); answers the control plane sends
(`lenient = True`) ignore unknown fields, so an older agent reads a newer server's answer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from enum import Enum
from functools import cache
from typing import Any, TypeVar

import msgpack

from edgefleet.errors import InvalidInput

PROTOCOL_VERSION = 1
# The largest integer a database column holds (SQLite and PostgreSQL BIGINT).
INT_MAX = 2**63 - 1

JsonObject = Mapping[str, Any]


# A message class: a frozen dataclass; one sent on its own also has a `wire_name` (the
# root of its paths in errors) and a `code` (its tag in the binary encoding).
M = TypeVar("M")


@dataclass(frozen=True)
class Bounds:
    min_len: int = 0
    max_len: int | None = None  # characters of a string, items of a list or mapping
    ge: float | None = None
    le: float | None = None
    pattern: str | None = None
    omit_none: bool = False  # JSON leaves the field out while it is None


def bounded(
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    min_len: int = 0,
    max_len: int | None = None,
    ge: float | None = None,
    le: float | None = None,
    pattern: str | None = None,
    omit_none: bool = False,
) -> Any:
    """A dataclass field with the bounds its decoder checks."""
    meta = {"bounds": Bounds(min_len, max_len, ge, le, pattern, omit_none)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


Decoder = Callable[[Any, str], Any]  # (raw value, its path) -> value
Encoder = Callable[[Any], Any]

NO_BOUNDS = Bounds()


def _fail(path: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{path}: {reason}")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "an integer", float: "a number",
            bytes: "bytes"}.get(type(value), type(value).__name__)  # fmt: skip


def _decoder(tp: Any, bounds: Bounds, binary: bool) -> Decoder:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        decode_inner = _decoder(inner[0], bounds, binary)

        def optional(raw: Any, path: str) -> Any:
            return None if raw is None else decode_inner(raw, path)

        return optional
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _message_decoder(tp, binary)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return _enum_decoder(tp)
    if tp is str:
        return _str_decoder(bounds)
    if tp is bool:
        return _bool_decoder
    if tp is int or tp is float:
        return _number_decoder(tp, bounds)
    if origin is tuple:
        return _tuple_decoder(_decoder(args[0], NO_BOUNDS, binary), bounds)
    if origin in (Mapping, dict):
        return _mapping_decoder(args[1] is str, bounds)
    raise TypeError(f"no protocol decoder for {tp!r}")


def _str_decoder(bounds: Bounds) -> Decoder:
    pattern = re.compile(bounds.pattern) if bounds.pattern else None

    def decode(raw: Any, path: str) -> str:
        if not isinstance(raw, str):
            raise _fail(path, f"expected a string, got {_type_name(raw)}")
        if len(raw) < bounds.min_len:
            raise _fail(path, f"at least {bounds.min_len} characters")
        if bounds.max_len is not None and len(raw) > bounds.max_len:
            raise _fail(path, f"at most {bounds.max_len} characters, got {len(raw)}")
        if pattern is not None and not pattern.fullmatch(raw):
            raise _fail(path, f"{raw[:80]!r} does not match {bounds.pattern}")
        _check_unicode(raw, path)
        return raw

    return decode


def _check_unicode(text: str, path: str) -> None:
    """Refuse lone surrogates (JSON lets "\\ud800" through): no UTF-8 wire could carry them."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise _fail(path, "not valid Unicode (a lone surrogate)") from None


def _bool_decoder(raw: Any, path: str) -> bool:
    if not isinstance(raw, bool):
        raise _fail(path, f"expected true or false, got {_type_name(raw)}")
    return raw


def _number_decoder(tp: type, bounds: Bounds) -> Decoder:
    integer = tp is int
    low = bounds.ge if bounds.ge is not None else (-INT_MAX - 1 if integer else None)
    high = bounds.le if bounds.le is not None else (INT_MAX if integer else None)

    def decode(raw: Any, path: str) -> int | float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _fail(path, f"expected a number, got {_type_name(raw)}")
        if integer and not isinstance(raw, int):
            raise _fail(path, f"expected an integer, got {raw!r}")
        if not math.isfinite(raw):
            raise _fail(path, "expected a finite number")
        if (low is not None and raw < low) or (high is not None and raw > high):
            raise _fail(path, f"{raw} is outside {low}..{high}")
        return raw if integer else float(raw)

    return decode


def _enum_decoder(tp: type[Enum]) -> Decoder:
    values = {e.value: e for e in tp}

    def decode(raw: Any, path: str) -> Enum:
        found = values.get(raw) if isinstance(raw, str) else None
        if found is None:
            allowed = ", ".join(str(v) for v in values)
            raise _fail(path, f"{raw!r} is not one of {allowed}")
        return found

    return decode


def _tuple_decoder(item: Decoder, bounds: Bounds) -> Decoder:
    def decode(raw: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(raw, list):
            raise _fail(path, f"expected a list, got {_type_name(raw)}")
        if bounds.max_len is not None and len(raw) > bounds.max_len:
            raise _fail(path, f"at most {bounds.max_len} items, got {len(raw)}")
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(raw))

    return decode


def _mapping_decoder(strings: bool, bounds: Bounds) -> Decoder:
    """An object with string keys; `strings`: its values are strings too (else any JSON)."""

    def decode(raw: Any, path: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise _fail(path, f"expected an object, got {_type_name(raw)}")
        if bounds.max_len is not None and len(raw) > bounds.max_len:
            raise _fail(path, f"at most {bounds.max_len} entries, got {len(raw)}")
        for key, value in raw.items():
            if not isinstance(key, str):
                raise _fail(path, f"keys must be strings, got {_type_name(key)}")
            _check_unicode(key, path)
            if strings:
                if not isinstance(value, str):
                    raise _fail(f"{path}.{key}", f"expected a string, got {_type_name(value)}")
                _check_unicode(value, f"{path}.{key}")
        return dict(raw)

    return decode


@dataclass(frozen=True)
class _Field:
    name: str
    decode: Decoder
    encode: Encoder
    default: Any  # MISSING: required
    factory: Callable[[], Any] | None
    omit_none: bool

    def default_value(self) -> Any:
        return self.factory() if self.factory is not None else self.default

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.factory is None


@cache
def _fields(cls: type, binary: bool) -> tuple[_Field, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        bounds = f.metadata.get("bounds", NO_BOUNDS)
        factory = None if f.default_factory is MISSING else f.default_factory
        out.append(_Field(f.name, _decoder(hints[f.name], bounds, binary),
                          _encoder(hints[f.name], binary), f.default, factory,
                          bounds.omit_none))  # fmt: skip
    return tuple(out)


def _message_decoder(cls: type, binary: bool) -> Decoder:
    lenient = bool(getattr(cls, "lenient", False))

    def decode_binary(raw: Any, path: str) -> Any:
        fields = _fields(cls, True)
        if not isinstance(raw, list):
            raise _fail(path, f"expected a list of fields, got {_type_name(raw)}")
        if len(raw) > len(fields) and not lenient:
            raise _fail(path, f"{len(raw)} fields, at most {len(fields)} known")
        values = {}
        for i, f in enumerate(fields):
            if i < len(raw):
                values[f.name] = f.decode(raw[i], f"{path}.{f.name}")
            elif f.required:
                raise _fail(f"{path}.{f.name}", "missing")
        return cls(**values)

    def decode_json(raw: Any, path: str) -> Any:
        fields = _fields(cls, False)
        if not isinstance(raw, dict):
            raise _fail(path, f"expected an object, got {_type_name(raw)}")
        if not lenient:
            known = {f.name for f in fields}
            unknown = [k for k in raw if k not in known]
            if unknown:
                raise _fail(f"{path}.{unknown[0]}", "unknown field")
        values = {}
        for f in fields:
            if f.name in raw:
                values[f.name] = f.decode(raw[f.name], f"{path}.{f.name}")
            elif f.required:
                raise _fail(f"{path}.{f.name}", "missing")
        return cls(**values)

    return decode_binary if binary else decode_json


def json_schema(kind: type) -> dict[str, Any]:
    """The JSON Schema of `kind`'s JSON encoding, inline (the OpenAPI document's request and
    answer bodies of the device routes are derived from the protocol, not written twice)."""
    return _schema(kind, NO_BOUNDS)


def _schema(tp: Any, bounds: Bounds) -> dict[str, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in args if a is not type(None))
        return {"anyOf": [_schema(inner, bounds), {"type": "null"}]}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = dataclasses.fields(tp)
        out: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: _schema(hints[f.name], f.metadata.get("bounds", NO_BOUNDS))
                           for f in fields},
            "additionalProperties": bool(getattr(tp, "lenient", False)),
        }  # fmt: skip
        required = [f.name for f in fields
                    if f.default is MISSING and f.default_factory is MISSING]  # fmt: skip
        if required:
            out["required"] = required
        return out
    if isinstance(tp, type) and issubclass(tp, Enum):
        return {"type": "string", "enum": [e.value for e in tp]}
    if tp is str:
        out = {"type": "string"}
        if bounds.min_len:
            out["minLength"] = bounds.min_len
        if bounds.max_len is not None:
            out["maxLength"] = bounds.max_len
        if bounds.pattern:
            out["pattern"] = f"^{bounds.pattern}$"
        return out
    if tp is bool:
        return {"type": "boolean"}
    if tp is int or tp is float:
        out = {"type": "integer" if tp is int else "number"}
        if bounds.ge is not None:
            out["minimum"] = bounds.ge
        if bounds.le is not None:
            out["maximum"] = bounds.le
        return out
    if origin is tuple:
        out = {"type": "array", "items": _schema(args[0], NO_BOUNDS)}
        if bounds.max_len is not None:
            out["maxItems"] = bounds.max_len
        return out
    if origin in (Mapping, dict):
        return {"type": "object", **({"additionalProperties": {"type": "string"}}
                                     if args[1] is str else {})}  # fmt: skip
    raise TypeError(f"no JSON schema for {tp!r}")


def _encoder(tp: Any, binary: bool) -> Encoder:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        inner = _encoder(next(a for a in args if a is not type(None)), binary)
        return lambda value: None if value is None else inner(value)
    if dataclasses.is_dataclass(tp):
        return lambda value: _encode_message(value, binary)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return lambda value: value.value
    if origin is tuple:
        item = _encoder(args[0], binary)
        return lambda value: [item(v) for v in value]
    if origin in (Mapping, dict):
        return dict
    return _same


def _same(value: Any) -> Any:
    return value


def _encode_message(msg: Any, binary: bool) -> Any:
    cls: type = type(msg)
    fields = _fields(cls, binary)
    if not binary:
        out = {}
        for f in fields:
            value = getattr(msg, f.name)
            if value is None and f.omit_none:
                continue
            out[f.name] = f.encode(value)
        return out
    values = [getattr(msg, f.name) for f in fields]
    end = len(values)  # trailing fields that hold their default are left off
    while (
        end and not fields[end - 1].required and values[end - 1] == fields[end - 1].default_value()
    ):
        end -= 1
    return [fields[i].encode(values[i]) for i in range(end)]


def _wire_name(kind: type) -> str:
    name: str = getattr(kind, "wire_name", kind.__name__)
    return name


def to_dict(msg: object) -> dict[str, Any]:
    """`msg` (any protocol dataclass) as the JSON object the HTTP wire carries."""
    out: dict[str, Any] = _encode_message(msg, False)
    return out


def from_dict(kind: type[M], data: Any) -> M:
    """A `kind` message from a decoded JSON object; InvalidInput naming the bad field."""
    decoded: M = _message_decoder(kind, False)(data, _wire_name(kind))
    return decoded


def to_json(msg: object) -> bytes:
    """`msg` as compact JSON bytes (the HTTP wire)."""
    return json.dumps(to_dict(msg), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode()  # fmt: skip


def from_json(kind: type[M], data: bytes) -> M:
    """A `kind` message from JSON bytes; InvalidInput naming the bad field."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{_wire_name(kind)}: not JSON: {e}") from None
    return from_dict(kind, raw)


def to_binary(msg: object) -> bytes:
    """`msg` in the compact msgpack encoding (MQTT): `[version, code, *fields]`."""
    fields = _encode_message(msg, True)
    code = getattr(msg, "code")  # noqa: B009 (a class attribute of top-level messages)
    packed: bytes = msgpack.packb([PROTOCOL_VERSION, code, *fields], use_bin_type=True)
    return packed


def from_binary(kind: type[M], data: bytes) -> M:
    """A `kind` message from its msgpack encoding; InvalidInput naming the bad field."""
    name, code = _wire_name(kind), getattr(kind, "code", None)
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as e:
        raise InvalidInput(f"{name}: not msgpack: {e}") from None
    if not isinstance(raw, list) or len(raw) < 2:
        raise InvalidInput(f"{name}: expected [version, code, fields...], got {_type_name(raw)}")
    if raw[0] != PROTOCOL_VERSION:
        raise InvalidInput(f"{name}: protocol version {raw[0]!r}, this side speaks "
                           f"{PROTOCOL_VERSION}")  # fmt: skip
    if raw[1] != code:
        raise InvalidInput(f"{name}: message code {raw[1]!r}, expected {code}")
    decoded: M = _message_decoder(kind, True)(raw[2:], name)
    return decoded
