"""The installer's sandboxed model check, with real child processes and onnxruntime."""

from __future__ import annotations

import random
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgefleet.agent.process_runtime import HostRuntime
from edgefleet.agent.sandbox import check_models
from edgefleet.agent.sandbox_check import read_declared_outputs
from edgefleet.artifacts.model_builder import (
    IR_VERSION,
    OPSET_VERSION,
    build_memory_hog_model,
    build_mlp,
    build_nan_mlp,
    build_slow_model,
    save_model,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def wrong_shape_model() -> onnx.ModelProto:
    """Computes y as [batch, 4] but declares [batch, 3]."""
    model = build_mlp(output_size=4)
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 3
    return model


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(random.Random(3).randbytes(2000))
    return {
        "good": save_model(build_mlp(), tmp_path / "good.onnx"),
        "wide": save_model(build_mlp(16, 32, 5, seed=2), tmp_path / "wide.onnx"),
        "nan": save_model(build_nan_mlp(), tmp_path / "nan.onnx"),
        "wrong": save_model(wrong_shape_model(), tmp_path / "wrong.onnx"),
        "corrupt": corrupt,
        "hog": save_model(build_memory_hog_model(2048), tmp_path / "hog.onnx"),
        "slow": save_model(build_slow_model(), tmp_path / "slow.onnx"),
    }


async def test_good_models_pass(models: dict[str, Path]) -> None:
    verdict = await check_models([models["good"], models["wide"]])
    assert (verdict.ok, verdict.reason) == (True, "")
    assert [dict(m.output_shapes) for m in verdict.models] == [{"y": (1, 3)}, {"y": (1, 5)}]
    assert all(m.stage == "done" and m.run_ms is not None for m in verdict.models)


async def test_a_model_with_nan_outputs_passes_the_sandbox(models: dict[str, Path]) -> None:
    # Finite outputs are the workload's health check's business, not the sandbox's.
    assert (await check_models([models["nan"]])).ok


async def test_each_bad_model_is_refused_with_its_reason(models: dict[str, Path]) -> None:
    paths = [models["good"], models["corrupt"], models["wrong"], models["wide"]]
    verdict = await check_models(paths)
    assert not verdict.ok
    assert verdict.reason.startswith("corrupt.onnx: cannot load: INVALID_PROTOBUF: ")
    assert "Protobuf parsing failed" in verdict.reason
    good, corrupt, wrong, wide = verdict.models
    assert good.ok and wide.ok  # one bad model does not stop the others being checked
    assert (corrupt.ok, corrupt.stage) == (False, "load")
    assert str(models["corrupt"].parent) not in corrupt.reason  # no device paths in reasons
    assert (wrong.ok, wrong.stage) == (False, "outputs")
    assert wrong.reason == "output 'y' has shape [1, 4], declared [batch, 3]"


async def test_a_missing_model_is_refused(tmp_path: Path) -> None:
    verdict = await check_models([tmp_path / "absent.onnx"])
    assert not verdict.ok
    assert verdict.reason.startswith("absent.onnx: cannot load: NO_SUCHFILE")


async def test_a_model_that_blows_the_memory_limit_is_refused(models: dict[str, Path]) -> None:
    verdict = await check_models([models["hog"], models["good"]], memory_limit_mb=512)
    assert verdict.reason == "hog.onnx: out of memory (limit 512 MB)"
    assert [m.ok for m in verdict.models] == [False, True]


async def test_a_model_that_overruns_the_timeout_is_killed_and_refused(
    models: dict[str, Path],
) -> None:
    runtime = HostRuntime()
    verdict = await check_models(
        [models["good"], models["slow"], models["wide"]], timeout_s=2, runtime=runtime
    )
    assert verdict.reason == "slow.onnx: timed out after 2 s"
    assert [m.stage for m in verdict.models] == ["done", "crashed", "not-checked"]
    assert runtime.running() == []


async def test_a_child_killed_by_a_signal_is_reported(
    models: dict[str, Path], tmp_path: Path
) -> None:
    crashing_python = tmp_path / "python"
    crashing_python.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crashing_python.chmod(0o755)
    verdict = await check_models([models["good"]], python=str(crashing_python))
    assert verdict.reason == "good.onnx: crashed with signal SIGSEGV"


async def test_the_childs_output_goes_to_the_given_log(
    models: dict[str, Path], tmp_path: Path
) -> None:
    log = tmp_path / "sandbox.log"
    log.write_text("earlier check\n")
    verdict = await check_models([models["good"]], log_path=log)
    assert verdict.ok
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier check"
    assert '"ok": true' in lines[-1]


async def test_nothing_to_check_passes() -> None:
    assert (await check_models([])).ok


def test_declared_outputs_are_read_from_the_file_without_onnx(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"]),
            helper.make_node("Shape", ["x"], ["b"]),
            helper.make_node("Identity", ["x"], ["c"]),
        ],
        "three",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 7])],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 7]),
            helper.make_tensor_value_info("b", TensorProto.INT64, [2]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, None),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET_VERSION)])
    model.ir_version = IR_VERSION
    path = save_model(model, tmp_path / "three.onnx")
    assert read_declared_outputs(path) == {"a": ["n", 7], "b": [2], "c": None}
    big = save_model(build_mlp(256, 512, 9), tmp_path / "big.onnx")
    assert read_declared_outputs(big) == {"y": ["batch", 9]}
