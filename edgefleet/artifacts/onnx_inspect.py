"""ONNX inspection: check a model file and record the facts the fleet needs about it.

`inspect_onnx` runs onnx.checker (with shape inference) and refuses an invalid model with
the checker's own message as InvalidInput `invalid_onnx`. For a valid one it records opset
imports, graph inputs and outputs (name, element type, shape with symbolic dims as
strings), parameter count, file size, and the io_signature.

The io_signature is the sha256 (hex) of a canonical JSON document of the inputs and outputs
sorted by name, each as name, element type and shape. Weights, node names and opsets do not
change it; renaming a tensor or changing a type or dimension does. It is the value that an
`io_signature=<hash>` compatibility requirement compares against. Initializers that old
exporters also list as graph inputs are not inputs a caller feeds, so they are left out.

onnx is imported when a model is first inspected, not with this module: importing it (and
ml_dtypes with it) costs about 2 s of CPU, which every start of the control plane paid.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefleet.errors import InvalidInput

if TYPE_CHECKING:
    import onnx

Dim = int | str
UNKNOWN_DIM = "?"


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output. `shape` is None when even the rank is unknown."""

    name: str
    elem_type: str
    shape: tuple[Dim, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "elem_type": self.elem_type,
            "shape": None if self.shape is None else list(self.shape),
        }


@dataclass(frozen=True)
class OnnxFacts:
    """What inspection learned about a valid ONNX model."""

    ir_version: int
    opset_imports: tuple[tuple[str, int], ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameter_count: int
    size_bytes: int
    io_signature: str
    producer: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ir_version": self.ir_version,
            "opset_imports": {domain or "ai.onnx": v for domain, v in self.opset_imports},
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "parameter_count": self.parameter_count,
            "size_bytes": self.size_bytes,
            "io_signature": self.io_signature,
            "producer": self.producer,
        }


def inspect_onnx(path: Path) -> OnnxFacts:
    """Check and describe the ONNX model at `path`; InvalidInput `invalid_onnx` if invalid."""
    import onnx.checker  # here, not at the top: see the docstring
    import onnx.shape_inference

    size_bytes = path.stat().st_size
    try:
        # Checking by path lets the checker handle models with external data (> 2 GB).
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        # The checker's message, on one line, without the server's file path in it.
        message = " ".join(str(e).replace(str(path), path.name).split())
        raise InvalidInput(f"invalid ONNX model: {message}", code="invalid_onnx") from None
    graph = model.graph
    initializer_names = {init.name for init in graph.initializer}
    inputs = tuple(_tensor_spec(v) for v in graph.input if v.name not in initializer_names)
    outputs = tuple(_tensor_spec(v) for v in graph.output)
    return OnnxFacts(
        ir_version=model.ir_version,
        opset_imports=tuple(sorted((o.domain, o.version) for o in model.opset_import)),
        inputs=inputs,
        outputs=outputs,
        parameter_count=_parameter_count(graph),
        size_bytes=size_bytes,
        io_signature=compute_io_signature(inputs, outputs),
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
    )


def compute_io_signature(
    inputs: tuple[TensorSpec, ...] | list[TensorSpec],
    outputs: tuple[TensorSpec, ...] | list[TensorSpec],
) -> str:
    """sha256 hex of the inputs and outputs in canonical form (sorted by name)."""
    document = {
        "inputs": [t.to_dict() for t in sorted(inputs, key=lambda t: t.name)],
        "outputs": [t.to_dict() for t in sorted(outputs, key=lambda t: t.name)],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        # Sequences, maps and optionals: record the kind; their insides are not compared.
        return TensorSpec(value.name, kind or "unknown", None)
    tensor = value.type.tensor_type
    import onnx  # imported by inspect_onnx already

    elem_type = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
    if not tensor.HasField("shape"):
        return TensorSpec(value.name, elem_type, None)
    return TensorSpec(value.name, elem_type, tuple(_dim(d) for d in tensor.shape.dim))


def _dim(dim: onnx.TensorShapeProto.Dimension) -> Dim:
    which = dim.WhichOneof("value")
    if which == "dim_value":
        return int(dim.dim_value)
    if which == "dim_param":
        return str(dim.dim_param)
    return UNKNOWN_DIM


def _parameter_count(graph: onnx.GraphProto) -> int:
    count = 0
    for init in graph.initializer:
        elements = 1
        for d in init.dims:
            elements *= int(d)
        count += elements
    for sparse in graph.sparse_initializer:
        elements = 1
        for d in sparse.dims:
            elements *= int(d)
        count += elements
    return count
