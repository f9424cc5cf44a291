"""The sandbox check's child program: load each ONNX model, run it once, check its outputs.

    python -m edgefleet.agent.sandbox_check MODEL...

For each model, in order: create an onnxruntime session (CPU provider, one thread), feed
generated inputs (`generate_inputs`: zeros of the declared type, symbolic or unknown dims
set to 1), run once, and compare every output's shape with the shape the model file
declares for it (a symbolic dim matches anything, a fixed dim must match, the rank must
match). One JSON line per model goes to stdout::

    {"model": "a.onnx", "ok": true, "stage": "done", "reason": "",
     "outputs": {"y": [1, 3]}, "run_ms": 0.4}

`stage` is where it stopped: `load`, `inputs`, `run`, `outputs` or `done`. The exit status
is 0 only when every model passed. The parent (edgefleet.agent.sandbox) applies the memory
and time limits and turns a crash into a reason.

Declared output shapes are read from the file itself, because onnxruntime reports shapes
merged with its own inference (a model declaring [batch, 3] and computing [batch, 4] shows
[batch, 4]), and devices do not install the `onnx` package: `read_declared_outputs` walks
the protobuf wire format and skips over the weights without reading them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

Dim = int | str | None

# onnxruntime type strings -> numpy dtypes; what the sandbox can generate input for.
NUMPY_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}

# Field numbers in onnx.proto (ModelProto.graph, GraphProto.output, ...).
_MODEL_GRAPH, _GRAPH_OUTPUT = 7, 12
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR, _TENSOR_SHAPE, _SHAPE_DIM = 1, 2, 1
_DIM_VALUE, _DIM_PARAM = 1, 2
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : (\w+) : ")
_OUT_OF_MEMORY = ("Failed to allocate memory", "bad_alloc", "failed to map segment")
_REASON_CHARS = 300


class SandboxFailure(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def generate_inputs(session: Any) -> dict[str, np.ndarray]:
    """Zeros for every declared input: a valid index for integer inputs, neutral for floats.

    Symbolic and unknown dims become 1; an input of a type in no NUMPY_TYPES entry is a
    SandboxFailure.
    """
    feeds: dict[str, np.ndarray] = {}
    for arg in session.get_inputs():
        dtype = NUMPY_TYPES.get(arg.type)
        if dtype is None:
            raise SandboxFailure("inputs", f"input {arg.name!r} has unsupported type {arg.type}")
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in (arg.shape or [])]
        feeds[arg.name] = np.zeros(shape, dtype=dtype)
    return feeds


def describe_error(error: BaseException) -> str:
    """One line for an exception from onnxruntime, without its `[ONNXRuntimeError] : n :`."""
    if isinstance(error, MemoryError) or any(m in str(error) for m in _OUT_OF_MEMORY):
        return "out of memory"
    text = " ".join(str(error).split()) or type(error).__name__
    text = _ORT_PREFIX.sub(lambda m: f"{m.group(1)}: ", text)
    return text[:_REASON_CHARS]


def shape_mismatch(actual: Sequence[int], declared: Sequence[Dim]) -> bool:
    """Whether an output's actual shape breaks its declared one.

    >>> shape_mismatch([1, 3], ["batch", 3]), shape_mismatch([1, 4], ["batch", 3])
    (False, True)
    """
    if len(actual) != len(declared):
        return True
    return any(isinstance(d, int) and d != a for a, d in zip(actual, declared, strict=True))


def format_shape(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


# -- reading declared outputs from the protobuf wire format ---------------------------------


def _varint(stream: IO[bytes]) -> int:
    result, shift = 0, 0
    while True:
        byte = stream.read(1)
        if not byte:
            raise ValueError("truncated protobuf")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("malformed protobuf varint")


def _fields(stream: IO[bytes], end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, wire type, value) of a message ending at offset `end`.

    For length-delimited fields the value is the length and the stream is at the payload;
    whatever the caller does not read of it is skipped by seeking, so weights are never read.
    """
    while stream.tell() < end:
        key = _varint(stream)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            yield number, wire_type, _varint(stream)
        elif wire_type == 1:
            stream.seek(8, os.SEEK_CUR)
        elif wire_type == 5:
            stream.seek(4, os.SEEK_CUR)
        elif wire_type == 2:
            length = _varint(stream)
            start = stream.tell()
            yield number, wire_type, length
            stream.seek(start + length)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _read_dims(stream: IO[bytes], end: int) -> list[Dim]:
    dims: list[Dim] = []
    for number, wire, length in _fields(stream, end):
        if number != _SHAPE_DIM or wire != 2:
            continue
        dim: Dim = None
        for field, kind, value in _fields(stream, stream.tell() + length):
            if field == _DIM_VALUE and kind == 0:
                dim = _signed64(value)
            elif field == _DIM_PARAM and kind == 2:
                dim = stream.read(value).decode("utf-8", "replace")
        dims.append(dim)
    return dims


def _read_value_info(stream: IO[bytes], end: int) -> tuple[str, list[Dim] | None]:
    name, shape = "", None
    for number, wire, length in _fields(stream, end):
        if number == _VALUE_NAME and wire == 2:
            name = stream.read(length).decode("utf-8", "replace")
        elif number == _VALUE_TYPE and wire == 2:
            for field, kind, size in _fields(stream, stream.tell() + length):
                if field != _TYPE_TENSOR or kind != 2:
                    continue  # sequences, maps, optionals: no shape to compare
                for part, part_kind, part_size in _fields(stream, stream.tell() + size):
                    if part == _TENSOR_SHAPE and part_kind == 2:
                        shape = _read_dims(stream, stream.tell() + part_size)
    return name, shape


def read_declared_outputs(path: Path) -> dict[str, list[Dim] | None]:
    """The graph outputs the model file declares: name -> shape (None: rank unknown)."""
    outputs: dict[str, list[Dim] | None] = {}
    with open(path, "rb") as stream:
        size = stream.seek(0, os.SEEK_END)
        stream.seek(0)
        for number, wire, length in _fields(stream, size):
            if number != _MODEL_GRAPH or wire != 2:
                continue
            for field, kind, value_length in _fields(stream, stream.tell() + length):
                if field == _GRAPH_OUTPUT and kind == 2:
                    name, shape = _read_value_info(stream, stream.tell() + value_length)
                    outputs[name] = shape
    return outputs


# -- the check ------------------------------------------------------------------------------


def check_model(path: Path) -> dict[str, Any]:
    """Check one model; the JSON-ready result (never raises for a bad model)."""
    result: dict[str, Any] = {"model": str(path), "ok": False, "stage": "load", "reason": ""}
    try:
        result.update(_check(path, result))
        result["ok"], result["stage"] = True, "done"
    except SandboxFailure as failure:
        result["stage"], result["reason"] = failure.stage, failure.reason
    except Exception as e:
        result["reason"] = describe_error(e)
    return result


def _check(path: Path, progress: dict[str, Any]) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        reason = describe_error(e).replace(str(path), path.name)
        raise SandboxFailure("load", f"cannot load: {reason}") from None
    progress["stage"] = "inputs"
    feeds = generate_inputs(session)
    try:
        declared = read_declared_outputs(path)
    except (OSError, ValueError) as e:
        raise SandboxFailure("load", f"cannot read declared outputs: {e}") from None
    progress["stage"] = "run"
    names = [arg.name for arg in session.get_outputs()]
    started = time.perf_counter()
    try:
        values = session.run(names, feeds)
    except Exception as e:
        raise SandboxFailure("run", f"inference failed: {describe_error(e)}") from None
    run_ms = (time.perf_counter() - started) * 1000
    outputs = {name: list(np.shape(value)) for name, value in zip(names, values, strict=True)}
    for name, shape in outputs.items():
        expected = declared.get(name)
        if expected is not None and shape_mismatch(shape, expected):
            raise SandboxFailure(
                "outputs",
                f"output {name!r} has shape {format_shape(shape)}, "
                f"declared {format_shape(expected)}",
            )
    return {"outputs": outputs, "run_ms": round(run_ms, 3)}


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: python -m edgefleet.agent.sandbox_check MODEL...", file=sys.stderr)
        return 2
    # Quiet onnxruntime's warnings (e.g. about merging shapes): the JSON lines carry the news.
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    all_ok = True
    for model in argv:
        result = check_model(Path(model))
        all_ok = all_ok and result["ok"]
        print(json.dumps(result), flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
