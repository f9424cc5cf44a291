"""The example federated task: classifying points of ten classes, with data made on the
device and never sent anywhere.

The model is the example inference workload's MLP (`artifacts.model_builder.build_mlp`:
`y = relu(x @ W1 + b1) @ W2 + b2`), held as one float32 vector in the order W1, b1, W2, b2.
The classes' centres are shared by every site (they come from the task's seed); each site
draws its own label mix from a Dirichlet(0.5) (most sites see a few classes often and
others rarely: non-IID) and its own shift of the inputs, from a seed derived from the
device's id. `global_test_set` is a balanced set of the task for benchmarks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
Features = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int64]

TASK_SEED = 20261207
INPUT_SIZE = 16
HIDDEN_SIZE = 32
CLASSES = 10
LABEL_CONCENTRATION = 0.5
SITE_SHIFT = 0.3
NOISE = 1.4
LAYERS = ("W1", "b1", "W2", "b2")


@dataclass(frozen=True)
class Shapes:
    input_size: int = INPUT_SIZE
    hidden_size: int = HIDDEN_SIZE
    output_size: int = CLASSES

    def of(self) -> dict[str, tuple[int, ...]]:
        return {
            "W1": (self.input_size, self.hidden_size),
            "b1": (self.hidden_size,),
            "W2": (self.hidden_size, self.output_size),
            "b2": (self.output_size,),
        }

    @property
    def length(self) -> int:
        return sum(int(np.prod(s)) for s in self.of().values())


def split_layers(weights: Vector, shapes: Shapes) -> dict[str, npt.NDArray[np.float64]]:
    layers, at = {}, 0
    for name, shape in shapes.of().items():
        size = int(np.prod(shape))
        layers[name] = weights[at : at + size].astype(np.float64).reshape(shape)
        at += size
    return layers


def join_layers(layers: Mapping[str, npt.NDArray[np.floating]]) -> Vector:
    return np.concatenate([np.asarray(layers[n], dtype=np.float32).ravel() for n in LAYERS])


def _centres() -> Features:
    return np.random.default_rng(TASK_SEED).normal(0.0, 1.0, (CLASSES, INPUT_SIZE))


def _site_rng(site: str) -> np.random.Generator:
    digest = hashlib.sha256(f"federated-task/{site}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _sample(rng: np.random.Generator, labels: Labels, shift: Features) -> Features:
    return _centres()[labels] + shift + rng.normal(0.0, NOISE, (labels.size, INPUT_SIZE))


def site_data(site: str, samples: int) -> tuple[Features, Labels, Features, Labels]:
    """A site's training set and its own test set (a fifth as large), same distribution."""
    rng = _site_rng(site)
    mix = rng.dirichlet([LABEL_CONCENTRATION] * CLASSES)
    shift = rng.normal(0.0, SITE_SHIFT, INPUT_SIZE)
    test = max(1, samples // 5)
    labels = rng.choice(CLASSES, size=samples + test, p=mix).astype(np.int64)
    x = _sample(rng, labels, shift)
    return x[:samples], labels[:samples], x[samples:], labels[samples:]


def global_test_set(samples: int) -> tuple[Features, Labels]:
    rng = np.random.default_rng(TASK_SEED + 1)
    labels = rng.integers(0, CLASSES, samples).astype(np.int64)
    return _sample(rng, labels, np.zeros(INPUT_SIZE)), labels


def initial_weights(shapes: Shapes, seed: int = 0) -> Vector:
    """Weights drawn as build_mlp draws them."""
    rng = np.random.default_rng(seed)
    layers = {
        n: (rng.standard_normal(s) / np.sqrt(s[0]) if n.startswith("W") else np.zeros(s))
        for n, s in shapes.of().items()
    }
    return join_layers(layers)


def _forward(layers: dict[str, npt.NDArray[np.float64]], x: Features) -> tuple[Features, Features]:
    hidden = np.maximum(x @ layers["W1"] + layers["b1"], 0.0)
    return hidden, hidden @ layers["W2"] + layers["b2"]


def accuracy(weights: Vector, shapes: Shapes, x: Features, y: Labels) -> float:
    _, logits = _forward(split_layers(weights, shapes), x)
    return float(np.mean(np.argmax(logits, axis=1) == y)) if y.size else 0.0


def train_local(
    weights: Vector,
    shapes: Shapes,
    x: Features,
    y: Labels,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    mu: float,
    rng: np.random.Generator,
) -> Vector:
    """Minibatch SGD on cross-entropy from `weights`; with `mu` > 0 the FedProx proximal
    term mu/2 |w - weights|^2 pulls towards the global model."""
    start = split_layers(weights, shapes)
    layers = {n: v.copy() for n, v in start.items()}
    for _ in range(epochs):
        order = rng.permutation(y.size)
        for begin in range(0, y.size, batch_size):
            batch = order[begin : begin + batch_size]
            xb, yb = x[batch], y[batch]
            hidden, logits = _forward(layers, xb)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(yb.size), yb] -= 1.0
            g_logits = p / yb.size
            grads = {"W2": hidden.T @ g_logits, "b2": g_logits.sum(axis=0)}
            g_hidden = (g_logits @ layers["W2"].T) * (hidden > 0)
            grads["W1"], grads["b1"] = xb.T @ g_hidden, g_hidden.sum(axis=0)
            for name in LAYERS:
                layers[name] -= learning_rate * (grads[name] + mu * (layers[name] - start[name]))
    return join_layers(layers)
