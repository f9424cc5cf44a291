"""Deltas between files: round trips, and every way a delta can be wrong is refused cleanly."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgefleet.artifacts import delta, delta_predictor, literal_stream
from edgefleet.artifacts.delta import apply_delta, create_delta, read_delta_info
from edgefleet.errors import InvalidInput

_DTYPES = [np.float32, np.float16, np.int8, np.uint8, np.float64]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model(arrays: dict[str, np.ndarray], graph_name: str = "g") -> bytes:
    """A valid ONNX model whose initializers are `arrays` (each passed through Identity)."""
    inits = [numpy_helper.from_array(a, name) for name, a in arrays.items()]
    nodes = [helper.make_node("Identity", [n], [f"{n}.out"]) for n in arrays]
    outputs = [helper.make_tensor_value_info(f"{n}.out", TensorProto.FLOAT, None) for n in arrays]
    graph = helper.make_graph(nodes, graph_name, [], outputs, inits)
    return helper.make_model(graph).SerializeToString()


def _round_trip(old: bytes, new: bytes, workdir: Path) -> Path:
    """Create a delta from old to new, apply it, check the result; return the delta's path."""
    workdir.mkdir(parents=True, exist_ok=True)
    old_path, new_path = workdir / "old.bin", workdir / "new.bin"
    old_path.write_bytes(old)
    new_path.write_bytes(new)
    patch, out = workdir / "patch.efd", workdir / "out.bin"
    made = create_delta(old_path, new_path, patch)
    applied = apply_delta(old_path, patch, out, expected_sha256=_sha256(new_path))
    assert out.read_bytes() == new
    assert made == applied == read_delta_info(patch)
    assert made.delta_size == patch.stat().st_size
    return patch


@st.composite
def model_pairs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    old: dict[str, np.ndarray] = {}
    new: dict[str, np.ndarray] = {}
    for i in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from(_DTYPES))
        shape = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
        if np.issubdtype(dtype, np.floating):
            value = (rng.standard_normal(shape) * 0.1).astype(dtype)
        else:
            value = rng.integers(0, 120, shape).astype(dtype)
        name = f"layer{i}.weight"
        old[name] = value
        how = draw(st.sampled_from(["same", "tune", "replace", "reshape", "rename", "drop"]))
        if how == "tune":
            if np.issubdtype(dtype, np.floating):
                value = (value + rng.standard_normal(shape) * 1e-3).astype(dtype)
            else:
                value = (value + rng.integers(-1, 2, shape)).astype(dtype)
        elif how == "replace":
            value = rng.permutation(value.ravel()).reshape(shape)
        elif how == "reshape":
            value = np.resize(value, (shape[0] + 1, shape[1]))
        elif how == "rename":
            name = f"renamed{i}.weight"
        if how != "drop":
            new[name] = value
    if draw(st.booleans()):
        new["added.bias"] = rng.standard_normal(draw(st.integers(1, 300))).astype(np.float32)
    return _model(old), _model(new, draw(st.sampled_from(["g", "g2", "a-longer-graph-name"])))


@settings(max_examples=40)
@given(model_pairs())
def test_onnx_models_round_trip(pair: tuple[bytes, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _round_trip(*pair, Path(tmp))


@st.composite
def edited_files(draw: st.DrawFn) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    words = [rng.bytes(int(rng.integers(1, 12))) for _ in range(50)]
    # Text-like data with repeats, so that matches against the old file matter.
    old = b" ".join(words[int(i)] for i in rng.integers(0, 50, draw(st.integers(0, 3000))))
    new = bytearray(old)
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(new)))
        length = draw(st.integers(0, 300))
        how = draw(st.sampled_from(["insert", "delete", "overwrite"]))
        junk = rng.bytes(length)
        if how == "insert":
            new[at:at] = junk
        elif how == "delete":
            del new[at : at + length]
        else:
            new[at : at + length] = junk
    return old, bytes(new)


@settings(max_examples=60)
@given(edited_files())
def test_plain_files_round_trip(pair: tuple[bytes, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _round_trip(*pair, Path(tmp))


@pytest.mark.parametrize(
    ("old", "new"), [(b"", b""), (b"", b"new"), (b"old", b""), (b"same", b"same")]
)
def test_empty_and_identical_files_round_trip(tmp_path: Path, old: bytes, new: bytes) -> None:
    _round_trip(old, new, tmp_path)


def test_a_large_file_is_matched_through_a_bounded_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shrink the limits so a small file exercises what a big one does: several segments,
    # unchanged pieces copied, and a window that must follow content shifted by an insert.
    monkeypatch.setattr(delta, "MAX_SEGMENT_BYTES", 8 << 10)
    monkeypatch.setattr(literal_stream, "MAX_PREFIX_BYTES", 16 << 10)
    rng = np.random.default_rng(4)
    old = rng.bytes(200 << 10)
    new = old[: 60 << 10] + rng.bytes(3000) + old[60 << 10 : 150 << 10] + old[: 9 << 10]
    new += old[150 << 10 :]
    patch = _round_trip(old, new, tmp_path)
    assert patch.stat().st_size < 8000


def test_unchanged_tensors_cost_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    arrays = {f"w{i}": rng.standard_normal((64, 64)).astype(np.float32) for i in range(4)}
    changed = {**arrays, "w2": arrays["w2"] + np.float32(1e-3)}
    patch = _round_trip(_model(arrays), _model(changed), tmp_path)
    info = read_delta_info(patch)
    assert info.copy_ops == 3 and info.tensor_ops == 1
    assert info.delta_size < 64 * 64 * 4 * 0.6


def _low_rank_pair(seed: int = 8) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A weight matrix fine-tuned the way gradient steps do it: a rank-3 update plus noise."""
    rng = np.random.default_rng(seed)
    old = (rng.standard_normal((160, 144)) * 0.05).astype(np.float32)
    update = rng.standard_normal((160, 3)) @ rng.standard_normal((3, 144)) * 1e-3
    new = (old + update + rng.standard_normal(old.shape) * 3e-5).astype(np.float32)
    new[:, 7] = old[:, 7]  # a dead unit: its column does not move at all
    return {"w": old}, {"w": new}


def test_a_low_rank_update_is_predicted_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = _low_rank_pair()
    patch = _round_trip(_model(old), _model(new), tmp_path)
    with delta.DeltaReader(patch) as reader:
        (op,) = [o for o in reader.header.ops if isinstance(o, delta.TensorOp)]
    assert op.predictor is not None and (op.predictor.rows, op.predictor.cols) == (160, 144)
    monkeypatch.setattr(delta_predictor, "RANKS", ())
    unpredicted = _round_trip(_model(old), _model(new), tmp_path / "plain")
    assert read_delta_info(patch).delta_size < 0.85 * read_delta_info(unpredicted).delta_size


def test_a_version_1_delta_is_still_applied(made: dict[str, Path]) -> None:
    def to_version_1(doc: dict[str, Any]) -> None:
        for op in doc["ops"]:
            if op[0] == 2:
                assert op.pop() is None

    _rewrite_header(made["patch"], to_version_1)
    data = bytearray(made["patch"].read_bytes()[:-32])
    data[8:10] = (1).to_bytes(2, "little")
    made["patch"].write_bytes(bytes(data) + hashlib.sha256(data).digest())
    apply_delta(made["old"], made["patch"], made["out"], expected_sha256=_sha256(made["new"]))
    assert made["out"].read_bytes() == made["new"].read_bytes()


def test_an_unknown_version_is_refused(made: dict[str, Path]) -> None:
    data = bytearray(made["patch"].read_bytes()[:-32])
    data[8:10] = (9).to_bytes(2, "little")
    made["patch"].write_bytes(bytes(data) + hashlib.sha256(data).digest())
    _refused(made, "unsupported_delta")


@pytest.fixture
def predicted(tmp_path: Path) -> dict[str, Path]:
    """Like `made`, but the delta's tensor carries a predictor."""
    old_arrays, new_arrays = _low_rank_pair()
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    old.write_bytes(_model(old_arrays))
    new.write_bytes(_model(new_arrays))
    patch = tmp_path / "patch.efd"
    create_delta(old, new, patch)
    return {"old": old, "new": new, "patch": patch, "out": tmp_path / "out" / "model.onnx"}


def _set_predictor(index: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        (op,) = [o for o in doc["ops"] if o[0] == 2]
        op[7][index] = value

    return change


@pytest.mark.parametrize(
    "change",
    [
        _set_predictor(2, 10_000),  # a rank over the limit
        _set_predictor(0, 7),  # rows x cols is not the tensor's size
        _set_predictor(3, -1.0),  # a negative unit
        _set_predictor(4, [1, 2]),  # not one multiplier per rank
        _set_predictor(6, 10**9),  # factors beyond the payload
        _set_predictor(6, 3),  # factors cut short
    ],
)
def test_a_hostile_predictor_is_refused(
    predicted: dict[str, Path], change: Callable[[dict[str, Any]], None]
) -> None:
    _rewrite_header(predicted["patch"], change)
    _refused(predicted, "corrupt_delta")


# ------------------------------------------------------------------ refusals


@pytest.fixture
def made(tmp_path: Path) -> dict[str, Path]:
    """A base, a target and a delta between them, in tmp_path."""
    rng = np.random.default_rng(6)
    arrays = {"w": rng.standard_normal((32, 32)).astype(np.float32)}
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    old.write_bytes(_model(arrays))
    new.write_bytes(_model({"w": arrays["w"] * np.float32(1.01)}))
    patch = tmp_path / "patch.efd"
    create_delta(old, new, patch)
    return {"old": old, "new": new, "patch": patch, "out": tmp_path / "out" / "model.onnx"}


def _refused(files: dict[str, Path], code: str, expected: str | None = None) -> None:
    with pytest.raises(InvalidInput) as caught:
        apply_delta(
            files["old"],
            files["patch"],
            files["out"],
            expected_sha256=expected or _sha256(files["new"]),
        )
    assert caught.value.code == code, caught.value.message
    assert not files["out"].exists()
    leftovers = list(files["out"].parent.glob("*")) if files["out"].parent.exists() else []
    assert leftovers == []


# The fixture's files are restored after every example, so sharing it is safe.
_SHARED_FIXTURE = [HealthCheck.function_scoped_fixture]


@settings(max_examples=60, suppress_health_check=_SHARED_FIXTURE)
@given(st.data())
def test_a_damaged_delta_is_refused_and_leaves_nothing(made: dict[str, Path], data: Any) -> None:
    good = made["patch"].read_bytes()
    damaged = bytearray(good)
    damaged[data.draw(st.integers(0, len(good) - 1))] ^= data.draw(st.integers(1, 255))
    made["patch"].write_bytes(bytes(damaged))
    try:
        with pytest.raises(InvalidInput) as caught:
            apply_delta(
                made["old"], made["patch"], made["out"], expected_sha256=_sha256(made["new"])
            )
        assert caught.value.code in ("corrupt_delta", "unsupported_delta")
        assert not made["out"].exists()
    finally:
        made["patch"].write_bytes(good)


@settings(max_examples=40, suppress_health_check=_SHARED_FIXTURE)
@given(st.data())
def test_a_truncated_delta_is_refused(made: dict[str, Path], data: Any) -> None:
    good = made["patch"].read_bytes()
    made["patch"].write_bytes(good[: data.draw(st.integers(0, len(good) - 1))])
    try:
        _refused(made, "corrupt_delta")
    finally:
        made["patch"].write_bytes(good)


def test_a_delta_for_another_base_is_refused_before_writing(made: dict[str, Path]) -> None:
    made["old"].write_bytes(made["old"].read_bytes()[:-1] + b"\x00")
    _refused(made, "delta_base_mismatch")


def test_an_existing_output_survives_a_refusal(made: dict[str, Path]) -> None:
    made["out"].parent.mkdir()
    made["out"].write_bytes(b"the installed model")
    with pytest.raises(InvalidInput):
        apply_delta(made["old"], made["patch"], made["out"], expected_sha256="0" * 64)
    assert made["out"].read_bytes() == b"the installed model"
    assert [p.name for p in made["out"].parent.iterdir()] == ["model.onnx"]


def test_a_delta_to_another_target_is_refused(made: dict[str, Path]) -> None:
    _refused(made, "delta_target_mismatch", expected="ab" * 32)


def test_a_malformed_expected_hash_is_refused(made: dict[str, Path]) -> None:
    _refused(made, "invalid_sha256", expected="not-a-hash")


def _rewrite_header(patch: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit a delta's header and re-seal it with a valid checksum, as a hostile maker could."""
    data = patch.read_bytes()
    header_len = int.from_bytes(data[10:14], "little")
    document = msgpack.unpackb(data[14 : 14 + header_len])
    change(document)
    header = msgpack.packb(document, use_bin_type=True)
    body = data[:10] + len(header).to_bytes(4, "little") + header + data[14 + header_len : -32]
    patch.write_bytes(body + hashlib.sha256(body).digest())


def test_a_delta_that_does_not_produce_its_hash_leaves_nothing(made: dict[str, Path]) -> None:
    # Claim a target the operations do not build: only the final hash can catch this.
    wrong = hashlib.sha256(b"something else").digest()
    _rewrite_header(made["patch"], lambda doc: doc["target"].__setitem__(1, wrong))
    _refused(made, "delta_output_mismatch", expected=wrong.hex())


def _set_op(index: int, value: list[Any]) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["ops"].__setitem__(index, value)


@pytest.mark.parametrize(
    "change",
    [
        _set_op(0, [0, 10**9, 5]),  # COPY beyond the base
        _set_op(0, [1, 10**9]),  # LITERAL more than the segments hold
        _set_op(0, [7, 1, 2]),  # unknown operation
        _set_op(0, [2, "w", 99, 4, -1, 4, [[0, 1]]]),  # unknown element kind
        lambda doc: doc["segments"][0].__setitem__(3, [[0, 10**12]]),  # prefix beyond base
        lambda doc: doc.__setitem__("ops", "nonsense"),
        lambda doc: doc.pop("base"),
    ],
)
def test_a_hostile_header_is_refused(
    made: dict[str, Path], change: Callable[[dict[str, Any]], None]
) -> None:
    _rewrite_header(made["patch"], change)
    _refused(made, "corrupt_delta")


def test_applying_needs_no_onnx(made: dict[str, Path]) -> None:
    script = (
        "import sys; sys.modules['onnx'] = None\n"
        "from pathlib import Path\n"
        "from edgefleet.artifacts.delta import apply_delta\n"
        f"apply_delta(Path({str(made['old'])!r}), Path({str(made['patch'])!r}), "
        f"Path({str(made['out'])!r}), expected_sha256={_sha256(made['new'])!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert made["out"].read_bytes() == made["new"].read_bytes()


def test_applying_a_delta_of_plain_files_needs_no_numpy(tmp_path: Path) -> None:
    old, new = tmp_path / "old.cfg", tmp_path / "new.cfg"
    old.write_bytes(b"threshold = 0.5\n" * 100)
    new.write_bytes(b"threshold = 0.7\n" * 100)
    patch, out = tmp_path / "patch.efd", tmp_path / "out.cfg"
    create_delta(old, new, patch)
    script = (
        "import sys; sys.modules['numpy'] = None; sys.modules['onnx'] = None\n"
        "from pathlib import Path\n"
        "from edgefleet.artifacts.delta import apply_delta\n"
        f"apply_delta(Path({str(old)!r}), Path({str(patch)!r}), Path({str(out)!r}), "
        f"expected_sha256={_sha256(new)!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert out.read_bytes() == new.read_bytes()


def test_a_tensor_delta_without_numpy_is_refused_cleanly(made: dict[str, Path]) -> None:
    script = (
        "import sys; sys.modules['numpy'] = None\n"
        "from pathlib import Path\n"
        "from edgefleet.artifacts.delta import apply_delta\n"
        "from edgefleet.errors import InvalidInput\n"
        "try:\n"
        f"    apply_delta(Path({str(made['old'])!r}), Path({str(made['patch'])!r}), "
        f"Path({str(made['out'])!r}), expected_sha256={_sha256(made['new'])!r})\n"
        "except InvalidInput as e:\n"
        "    sys.exit(e.code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.stderr.decode().strip() == "unsupported_delta"
    assert not made["out"].exists()
