"""Model builder: small, valid ONNX models made locally for tests, the demo and benchmarks.

`build_mlp` makes a two-layer perceptron `y = relu(x @ W1 + b1) @ W2 + b2` with weights
drawn from a seeded generator, so the same arguments give byte-identical models. Two
models with different `output_size` have different io_signatures: that is the
incompatible variant. `build_invalid_model` makes a model that onnx.checker refuses.
Models that are valid but misbehave, for the installer's checks and the rollout gates:
`build_nan_mlp` (always NaN), `build_faulty_mlp` (NaN on some inputs),
`build_memory_hog_model` (one inference allocates gigabytes) and `build_slow_model` (one
inference never ends). Nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

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


def _replace_initializer(model: onnx.ModelProto, values: np.ndarray, name: str) -> None:
    for index, init in enumerate(model.graph.initializer):
        if init.name == name:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(values, name))
            return
    raise KeyError(name)


def build_nan_mlp(
    input_size: int = 4,
    hidden_size: int = 8,
    output_size: int = 3,
    *,
    seed: int = 0,
    name: str = "nan-mlp",
) -> onnx.ModelProto:
    """`build_mlp` whose output is NaN for every input (its output bias is NaN).

    Valid, loads and has the declared shapes, so it passes the installer's sandbox check;
    the example workload's self-test finds the NaN and reports itself unhealthy.
    """
    model = build_mlp(input_size, hidden_size, output_size, seed=seed, name=name)
    _replace_initializer(model, np.full(output_size, np.nan, dtype=np.float32), "b2")
    return model


def build_faulty_mlp(
    input_size: int = 4,
    hidden_size: int = 8,
    output_size: int = 3,
    *,
    bad_fraction: float = 0.2,
    seed: int = 0,
    name: str = "faulty-mlp",
) -> onnx.ModelProto:
    """`build_mlp` that degrades on some inputs: rows whose first feature exceeds a threshold
    come out as NaN, the others exactly as `build_mlp` with the same seed computes them.

    The threshold is the standard normal's (1 - bad_fraction) quantile, so about
    `bad_fraction` of inputs drawn from N(0, 1) fail. An all-zero input (the self-test's)
    stays good while bad_fraction <= 0.5.
    """
    if not 0.0 < bad_fraction <= 1.0:
        raise ValueError("bad_fraction must be in (0, 1]")
    threshold = -np.inf if bad_fraction == 1.0 else NormalDist().inv_cdf(1.0 - bad_fraction)
    model = build_mlp(input_size, hidden_size, output_size, seed=seed, name=name)
    graph = model.graph
    graph.node[-1].output[0] = "y_clean"

    def const(values: np.ndarray, tensor_name: str) -> None:
        graph.initializer.append(numpy_helper.from_array(values, tensor_name))

    const(np.array([0], dtype=np.int64), "first")
    const(np.array([1], dtype=np.int64), "after_first")
    const(np.array([1], dtype=np.int64), "feature_axis")
    const(np.array(threshold, dtype=np.float32), "threshold")
    const(np.array(np.nan, dtype=np.float32), "nan")
    const(np.array(0.0, dtype=np.float32), "zero")
    graph.node.extend(
        [
            helper.make_node(
                "Slice", ["x", "first", "after_first", "feature_axis"], ["x0"], name="x0"
            ),
            helper.make_node("Greater", ["x0", "threshold"], ["bad"], name="is_bad"),
            helper.make_node("Where", ["bad", "nan", "zero"], ["poison"], name="poison"),
            helper.make_node("Add", ["y_clean", "poison"], ["y"], name="degrade"),
        ]
    )
    return model


def build_memory_hog_model(memory_mb: int = 2048, *, name: str = "memory-hog") -> onnx.ModelProto:
    """A tiny file whose one inference allocates about `memory_mb`: Expand of its scalar
    input to a square float32 matrix. For refusing models that blow a memory limit."""
    side = max(1, math.ceil(math.sqrt(memory_mb * 1024 * 1024 / 4)))
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["y"], name="expand")],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [side, side])],
        initializer=[numpy_helper.from_array(np.array([side, side], dtype=np.int64), "shape")],
    )
    return _finish(graph)


def build_slow_model(iterations: int = 10**9, *, name: str = "slow") -> onnx.ModelProto:
    """A model whose one inference runs a Loop of `iterations` additions: with the default
    it does not finish in any reasonable time. For refusing models that overrun a timeout."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
            helper.make_node(
                "Constant",
                [],
                ["one"],
                value=numpy_helper.from_array(np.ones(1, dtype=np.float32)),
                name="one",
            ),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"], name="step"),
        ],
        f"{name}-body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip_count", "keep_going", "x"], ["y"], body=body)],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=[
            numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trip_count"),
            numpy_helper.from_array(np.array(True), "keep_going"),
        ],
    )
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET_VERSION)],
        producer_name="edgefleet.model_builder",
    )
    model.ir_version = IR_VERSION
    return model


def model_bytes(model: onnx.ModelProto) -> bytes:
    """The serialized model, as it would be pushed."""
    return model.SerializeToString()


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Write the model to `path` atomically and return the path."""
    write_atomically(path, model_bytes(model))
    return path
