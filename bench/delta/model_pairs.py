"""Model pairs for the delta benchmark: (old, new) ONNX files that differ the way updates do.

Every pair is generated here with numpy and the `onnx` package; nothing is downloaded.

    a_one_tensor     10 float32 704x704 random tensors; one gets Gaussian noise at 1e-3 x its std
    b_all_tensors    the same noise on every tensor (a dense perturbation)
    c_last_replaced  the last tensor replaced by fresh random weights
    d_trained        a numpy MLP trained with Adam on synthetic data, then fine-tuned further
                     on shifted data at a 10x lower learning rate (a realistic dense fine-tune)
    d2_trained_gentle  the same pretrained MLP fine-tuned more gently (1 epoch, 100x lower)
    e_int8           the trained pair quantized to int8 by onnxruntime's dynamic quantizer

`--quick` sizes (the `quick=True` argument) shrink every model about 8x.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NOISE_SCALE = 1e-3


@dataclass(frozen=True)
class ModelPair:
    name: str
    description: str
    old: Path
    new: Path


def _chain_model(weights: list[np.ndarray], name: str) -> onnx.ModelProto:
    """A runnable graph x -> MatMul(W0) -> Relu -> ... -> MatMul(Wn) -> y."""
    nodes = []
    current = "x"
    for i in range(len(weights)):
        out = f"h{i}"
        nodes.append(helper.make_node("MatMul", [current, f"layer{i}.weight"], [out]))
        current = out
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    nodes[-1].output[0] = "y"
    inits = [numpy_helper.from_array(w, f"layer{i}.weight") for i, w in enumerate(weights)]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, weights[0].shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, weights[-1].shape[1]])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _mlp_model(params: list[tuple[np.ndarray, np.ndarray]], name: str) -> onnx.ModelProto:
    nodes = []
    inits = []
    current = "x"
    for i, (w, b) in enumerate(params):
        inits += [
            numpy_helper.from_array(w, f"fc{i}.weight"),
            numpy_helper.from_array(b, f"fc{i}.bias"),
        ]
        nodes.append(helper.make_node("MatMul", [current, f"fc{i}.weight"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"fc{i}.bias"], [f"a{i}"]))
        current = f"a{i}"
        if i < len(params) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"]))
            current = f"r{i}"
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, params[0][0].shape[0]])],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, [None, params[-1][0].shape[1]]
            )
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _random_weights(rng: np.random.Generator, count: int, side: int) -> list[np.ndarray]:
    scale = 1.0 / np.sqrt(side)
    return [(rng.standard_normal((side, side)) * scale).astype(np.float32) for _ in range(count)]


def _perturb(rng: np.random.Generator, w: np.ndarray) -> np.ndarray:
    noise = rng.standard_normal(w.shape) * (NOISE_SCALE * float(w.std()))
    return (w + noise).astype(np.float32)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def random_pairs(out_dir: Path, quick: bool, seed: int = 7) -> list[ModelPair]:
    """Patterns a, b and c over the same random-weight base model."""
    rng = np.random.default_rng(seed)
    side = 256 if quick else 704
    base = _random_weights(rng, 10, side)
    old = _save(_chain_model(base, "random"), out_dir / "random_old.onnx")

    one = list(base)
    one[4] = _perturb(rng, base[4])
    every = [_perturb(rng, w) for w in base]
    replaced = [*base[:-1], _random_weights(rng, 1, side)[0]]
    return [
        ModelPair(
            "a_one_tensor",
            "1 of 10 tensors perturbed (x1e-3)",
            old,
            _save(_chain_model(one, "random"), out_dir / "a_new.onnx"),
        ),
        ModelPair(
            "b_all_tensors",
            "every weight perturbed (x1e-3)",
            old,
            _save(_chain_model(every, "random"), out_dir / "b_new.onnx"),
        ),
        ModelPair(
            "c_last_replaced",
            "last layer replaced",
            old,
            _save(_chain_model(replaced, "random"), out_dir / "c_new.onnx"),
        ),
    ]


# ---------------------------------------------------------------- a small numpy training run


@dataclass
class _Adam:
    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    step_count: int = 0

    def __post_init__(self) -> None:
        self.m: dict[int, np.ndarray] = {}
        self.v: dict[int, np.ndarray] = {}

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.step_count += 1
        t = self.step_count
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            m = self.m.setdefault(i, np.zeros_like(p))
            v = self.v.setdefault(i, np.zeros_like(p))
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            m_hat = m / (1 - self.beta1**t)
            v_hat = v / (1 - self.beta2**t)
            p -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(p.dtype)


def _synthetic_task(
    rng: np.random.Generator, teacher: list[np.ndarray], samples: int, shift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs from a low-dimensional latent; labels from a fixed random teacher network."""
    latent_dim, proj, head = teacher[0].shape[0], teacher[1], teacher[2]
    z = rng.standard_normal((samples, latent_dim)).astype(np.float32) + shift
    x = np.tanh(z @ proj) + 0.1 * rng.standard_normal((samples, proj.shape[1])).astype(np.float32)
    y = np.argmax(np.tanh(z @ teacher[0]) @ head, axis=1)
    return x.astype(np.float32), y


def _train(
    params: list[tuple[np.ndarray, np.ndarray]],
    data: tuple[np.ndarray, np.ndarray],
    epochs: int,
    lr: float,
    rng: np.random.Generator,
    batch: int = 64,
) -> list[float]:
    x_all, y_all = data
    flat = [t for pair in params for t in pair]
    opt = _Adam(lr)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x_all))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            x, y = x_all[idx], y_all[idx]
            acts = [x]
            for i, (w, b) in enumerate(params):
                h = acts[-1] @ w + b
                acts.append(np.maximum(h, 0) if i < len(params) - 1 else h)
            logits = acts[-1]
            logits = logits - logits.max(axis=1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(axis=1, keepdims=True)
            total += float(-np.log(prob[np.arange(len(y)), y] + 1e-12).sum())
            delta = prob
            delta[np.arange(len(y)), y] -= 1
            delta /= len(y)
            grads: list[np.ndarray] = []
            for i in range(len(params) - 1, -1, -1):
                w, _ = params[i]
                grads = [acts[i].T @ delta, delta.sum(axis=0), *grads]
                if i > 0:
                    delta = (delta @ w.T) * (acts[i] > 0)
            opt.step(flat, [g.astype(np.float32) for g in grads])
        losses.append(total / len(x_all))
    return losses


def trained_pairs(
    out_dir: Path, quick: bool, seed: int = 11
) -> tuple[list[ModelPair], list[float]]:
    """Patterns d and d2: pretrain an MLP, then fine-tune copies of it on shifted data.

    d fine-tunes for 2 epochs at a tenth of the pretraining rate; d2 for 1 epoch at a
    hundredth. How far the weights move decides how many bits a lossless delta needs."""
    rng = np.random.default_rng(seed)
    inputs, hidden, classes = (64, 256, 10) if quick else (128, 768, 10)
    latent = 16
    teacher = [
        rng.standard_normal((latent, 32)).astype(np.float32),
        rng.standard_normal((latent, inputs)).astype(np.float32) / np.sqrt(latent),
        rng.standard_normal((32, classes)).astype(np.float32),
    ]
    sizes = [inputs, hidden, hidden, hidden, classes]
    params = [
        (
            (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32),
            np.zeros(b, dtype=np.float32),
        )
        for a, b in itertools.pairwise(sizes)
    ]
    samples = 2048 if quick else 4096
    pre = _train(params, _synthetic_task(rng, teacher, samples, 0.0), 4, 1e-3, rng)
    old = _save(_mlp_model(params, "mlp"), out_dir / "d_old.onnx")
    shifted = _synthetic_task(rng, teacher, samples, 0.3)
    gentle = [(w.copy(), b.copy()) for w, b in params]
    fine = _train(params, shifted, 2, 1e-4, rng)
    new = _save(_mlp_model(params, "mlp"), out_dir / "d_new.onnx")
    _train(gentle, shifted, 1, 1e-5, rng)
    new_gentle = _save(_mlp_model(gentle, "mlp"), out_dir / "d2_new.onnx")
    pairs = [
        ModelPair("d_trained", "MLP fine-tuned 2 epochs, Adam lr 1e-4", old, new),
        ModelPair(
            "d2_trained_gentle", "same MLP fine-tuned 1 epoch, Adam lr 1e-5", old, new_gentle
        ),
    ]
    return pairs, pre + fine


def int8_pair(trained: ModelPair, out_dir: Path) -> ModelPair:
    """Pattern e: both trained models through onnxruntime's dynamic int8 quantizer."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    paths = []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer advises pre-processing on every call
    try:
        for src, name in ((trained.old, "e_old.onnx"), (trained.new, "e_new.onnx")):
            dst = out_dir / name
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
            paths.append(dst)
    finally:
        root.setLevel(level)
    return ModelPair("e_int8", "the trained pair, int8-quantized", paths[0], paths[1])


def generate_pairs(
    out_dir: Path, quick: bool, log: Callable[[str], None] = print
) -> list[ModelPair]:
    """Write every pair into `out_dir` and return them in benchmark order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = random_pairs(out_dir, quick)
    log("generated random-weight pairs a, b, c")
    trained, losses = trained_pairs(out_dir, quick)
    log("trained MLP, loss per epoch: " + " ".join(f"{v:.3f}" for v in losses))
    return [*pairs, *trained, int8_pair(trained[0], out_dir)]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for pair in generate_pairs(Path(tmp), quick=True):
            print(pair.name, pair.old.stat().st_size, pair.new.stat().st_size)
