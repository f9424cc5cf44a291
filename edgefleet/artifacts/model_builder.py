"""Model builder: small, valid ONNX models made locally for tests, the demo and benchmarks.

`build_mlp` makes a two-layer perceptron `y = relu(x @ W1 + b1) @ W2 + b2` with weights
drawn from a seeded generator, so the same arguments give byte-identical models. Two
models with different `output_size` have different io_signatures: that is the
incompatible variant. `build_invalid_model` makes a model that onnx.checker refuses.
Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefleet.atomicfile import write_atomically

# Old enough for every onnxruntime the agent supports (>= 1.17 reads IR 9 / opset 17).
OPSET_VERSION = 17
IR_VERSION = 9
BATCH_DIM = "batch"


def build_mlp(
    input_size: int = 4,
    hidden_size: int = 8,
    output_size: int = 3,
    *,
    seed: int = 0,
    name: str = "mlp",
) -> onnx.ModelProto:
    """A float32 MLP with input `x` [batch, input_size] and output `y` [batch, output_size]."""
    if min(input_size, hidden_size, output_size) < 1:
        raise ValueError("layer sizes must be at least 1")
    rng = np.random.default_rng(seed)

    def weights(name: str, *shape: int) -> TensorProto:
        values = rng.standard_normal(shape).astype(np.float32) / np.float32(np.sqrt(shape[0]))
        return numpy_helper.from_array(values, name)

    initializers = [
        weights("W1", input_size, hidden_size),
        numpy_helper.from_array(np.zeros(hidden_size, dtype=np.float32), "b1"),
        weights("W2", hidden_size, output_size),
        numpy_helper.from_array(np.zeros(output_size, dtype=np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"], name="dense1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "W2"], ["y0"], name="dense2"),
        helper.make_node("Add", ["y0", "b2"], ["y"], name="bias2"),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH_DIM, input_size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH_DIM, output_size])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET_VERSION)],
        producer_name="edgefleet.model_builder",
    )
    model.ir_version = IR_VERSION
    return model


def build_invalid_model() -> onnx.ModelProto:
    """A model onnx.checker refuses: its only node reads an input nothing produces."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["missing"], ["y"], name="relu")],
        "invalid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET_VERSION)])
    model.ir_version = IR_VERSION
    return model


def model_bytes(model: onnx.ModelProto) -> bytes:
    """The serialized model, as it would be pushed."""
    return model.SerializeToString()


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Write the model to `path` atomically and return the path."""
    write_atomically(path, model_bytes(model))
    return path
