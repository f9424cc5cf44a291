from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgefleet.artifacts.model_builder import (
    build_invalid_model,
    build_mlp,
    model_bytes,
    save_model,
)
from edgefleet.artifacts.onnx_inspect import TensorSpec, compute_io_signature, inspect_onnx
from edgefleet.errors import InvalidInput


def test_records_the_facts_of_a_valid_model(tmp_path: Path) -> None:
    path = save_model(build_mlp(4, 8, 3, seed=1), tmp_path / "mlp.onnx")
    facts = inspect_onnx(path)
    assert facts.opset_imports == (("", 17),)
    assert facts.inputs == (TensorSpec("x", "float", ("batch", 4)),)
    assert facts.outputs == (TensorSpec("y", "float", ("batch", 3)),)
    assert facts.parameter_count == 4 * 8 + 8 + 8 * 3 + 3
    assert facts.size_bytes == path.stat().st_size
    assert len(facts.io_signature) == 64
    as_dict = facts.to_dict()
    assert as_dict["opset_imports"] == {"ai.onnx": 17}
    assert as_dict["inputs"] == [{"name": "x", "elem_type": "float", "shape": ["batch", 4]}]


def test_built_models_run_in_onnxruntime_with_the_declared_shapes() -> None:
    session = ort.InferenceSession(model_bytes(build_mlp(4, 8, 3)))
    (y,) = session.run(None, {"x": np.ones((5, 4), dtype=np.float32)})
    assert y.shape == (5, 3)


def test_builder_is_deterministic_per_seed() -> None:
    assert model_bytes(build_mlp(seed=7)) == model_bytes(build_mlp(seed=7))
    assert model_bytes(build_mlp(seed=7)) != model_bytes(build_mlp(seed=8))


def test_io_signature_is_stable_across_weights_and_sizes_inside(tmp_path: Path) -> None:
    a = inspect_onnx(save_model(build_mlp(4, 8, 3, seed=1), tmp_path / "a.onnx"))
    b = inspect_onnx(save_model(build_mlp(4, 32, 3, seed=2), tmp_path / "b.onnx"))
    assert a.io_signature == b.io_signature
    assert a.parameter_count != b.parameter_count


def test_io_signature_changes_with_the_output_shape(tmp_path: Path) -> None:
    a = inspect_onnx(save_model(build_mlp(4, 8, 3), tmp_path / "a.onnx"))
    wider = inspect_onnx(save_model(build_mlp(4, 8, 5), tmp_path / "b.onnx"))
    assert a.io_signature != wider.io_signature


def test_io_signature_ignores_declaration_order() -> None:
    x = TensorSpec("x", "float", ("batch", 4))
    mask = TensorSpec("mask", "bool", ("batch",))
    y = TensorSpec("y", "float", None)
    assert compute_io_signature([x, mask], [y]) == compute_io_signature([mask, x], [y])
    assert compute_io_signature([x], [y]) != compute_io_signature([y], [x])


def test_invalid_model_is_refused_with_the_checkers_message(tmp_path: Path) -> None:
    path = save_model(build_invalid_model(), tmp_path / "bad.onnx")
    with pytest.raises(InvalidInput) as caught:
        inspect_onnx(path)
    assert caught.value.code == "invalid_onnx"
    assert "topologically sorted" in caught.value.message
    assert "'missing'" in caught.value.message


def test_declared_shape_that_contradicts_the_graph_is_refused(tmp_path: Path) -> None:
    model = build_mlp(4, 8, 4)
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 3
    with pytest.raises(InvalidInput, match="Inferred shape and existing shape differ"):
        inspect_onnx(save_model(model, tmp_path / "lies.onnx"))


def test_a_file_that_is_not_onnx_is_refused_without_leaking_the_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_bytes(b"this is not a protobuf \xff\xfe")
    with pytest.raises(InvalidInput) as caught:
        inspect_onnx(path)
    assert caught.value.code == "invalid_onnx"
    assert str(tmp_path) not in caught.value.message
