"""A device's part in one federated training round, from its first key to its last share.

`run_round` follows the round's steps (core/learning/secure_round.py) through `exchange`,
a signed request to the control plane (in the agent, relayed by the training child's
parent; in the benchmark, a direct call). It trains on data made here
(examples/federated_task.py): only public keys, encrypted shares, the masked update and
two numbers (the received model's accuracy on this device's own test set, and the number
of samples) ever leave the device. The secrets of the round live in this process's memory
only: a device that dies mid-round has dropped out, which the protocol tolerates.

Routes (bodies msgpack):

    GET  /v1/devices/{id}/training/{job}/rounds/{n}         the round as this device sees it
    POST /v1/devices/{id}/training/{job}/rounds/{n}         {"phase", "payload"[, "metrics"]}
    GET  /v1/devices/{id}/training/{job}/model?have=SHA256  {"sha256", "steps"} or
                                                            {"sha256", "weights"}
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from edgefleet.artifacts.training_model import (
    Weights,
    apply_step,
    decode_weights,
    weights_sha256,
)
from edgefleet.atomicfile import write_atomically
from edgefleet.core.learning.privacy import clip_l2
from edgefleet.core.learning.ring import pack, quantise
from edgefleet.core.learning.secure_client import mask_input, reveal_shares, share_secrets
from edgefleet.core.learning.secure_round import Phase
from edgefleet.errors import InvalidInput
from edgefleet.examples.federated_task import Shapes, accuracy, site_data, train_local
from edgefleet.security.secure_aggregation import (
    RoundKeys,
    decrypt_share,
    encrypt_share,
    mask_seed,
)

Exchange = Callable[[str, str, bytes], bytes]  # (method, target, body) -> response body
SAMPLES_PER_SITE = 300


def round_target(device_id: str, job: str, number: int) -> str:
    return f"/v1/devices/{device_id}/training/{job}/rounds/{number}"


@dataclass
class _Held:
    keys: RoundKeys
    shares: dict[str, bytes]  # the plaintext shares the others sent this device
    peers: dict[str, Any]  # the public keys of U1, as the SHARES step showed them


class ModelCache:
    """The last global weights this device received, per job (so a round needs a step only)."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def load(self, job: str) -> Weights | None:
        path = self._dir / f"{hashlib.sha256(job.encode()).hexdigest()[:16]}.f32"
        if not path.exists():
            return None
        return np.frombuffer(path.read_bytes(), dtype="<f4").copy()

    def save(self, job: str, weights: Weights) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        path = self._dir / f"{hashlib.sha256(job.encode()).hexdigest()[:16]}.f32"
        write_atomically(path, weights.astype("<f4").tobytes())


def fetch_model(
    exchange: Exchange, device_id: str, job: str, cache: ModelCache, want_sha256: str
) -> Weights:
    """The round's starting weights, as steps from the cached ones when the plane has them."""
    held = cache.load(job)
    if held is not None and weights_sha256(held) == want_sha256:
        return held
    have = weights_sha256(held) if held is not None else ""
    answer = msgpack.unpackb(
        exchange(
            "GET",
            f"/v1/devices/{device_id}/training/{job}/model?have={have}&want={want_sha256}",
            b"",
        )
    )
    if "weights" in answer:
        weights = decode_weights(answer["weights"])
    else:
        if held is None:
            raise InvalidInput("training model: steps sent for weights this device lacks")
        weights = held
        for step in answer["steps"]:
            weights = apply_step(weights, step)
    if weights_sha256(weights) != want_sha256:
        raise InvalidInput("training model: the weights do not match the round's sha256")
    cache.save(job, weights)
    return weights


def local_update(
    view: dict[str, Any], device_id: str, weights: Weights, seed: int
) -> tuple[np.ndarray, dict[str, float]]:
    """Train on this device's data; the update as ring elements, and the metrics sent."""
    task = view["task"]
    shapes = Shapes(*task["sizes"])
    rng = np.random.default_rng(seed)
    x, y, x_test, y_test = site_data(device_id, int(task.get("samples", SAMPLES_PER_SITE)))
    before = accuracy(weights, shapes, x_test, y_test)
    local = task["local"]
    trained = train_local(
        weights,
        shapes,
        x,
        y,
        epochs=int(local["epochs"]),
        batch_size=int(local["batch_size"]),
        learning_rate=float(local["learning_rate"]),
        mu=float(task["mu"]),
        rng=rng,
    )
    update = trained.astype(np.float64) - weights.astype(np.float64)
    privacy = task.get("privacy")
    if privacy:
        update = clip_l2(update, float(privacy["clip_norm"]))
        update = update + rng.normal(0.0, float(privacy["noise_std"]), update.shape)
    quant = task["quantisation"]
    q = quantise(update, float(quant["range"]), int(quant["bits"]), rng)
    return q % (1 << int(view["ring_bits"])), {"accuracy": before, "samples": float(y.size)}


def run_round(
    exchange: Exchange,
    device_id: str,
    job: str,
    number: int,
    cache: ModelCache,
    entropy: Callable[[int], bytes],
    wait: Callable[[], None],
) -> dict[str, Any]:
    """Take part in round `number` until this device has nothing left to send; a summary."""
    target = round_target(device_id, job, number)
    held = _Held(RoundKeys.from_entropy(entropy(96)), {}, {})
    sent: list[str] = []
    while True:
        view = msgpack.unpackb(exchange("GET", target, b""), strict_map_key=False)
        phase = Phase(view["phase"])
        if phase in (Phase.DONE, Phase.FAILED):
            return {"phase": str(phase), "sent": sent, "reason": view.get("reason", "")}
        if not view["in_step"]:  # the round went on without this device
            return {"phase": "dropped", "sent": sent, "reason": f"not in step {phase}"}
        if not view["waiting_for_me"]:
            wait()
            continue
        body: dict[str, Any] = {"phase": str(phase)}
        if phase is Phase.KEYS:
            body["payload"] = held.keys.public()
        elif phase is Phase.SHARES:
            body["payload"] = _shares(view, device_id, job, number, held, entropy)
        elif phase is Phase.MASKED:
            weights = fetch_model(exchange, device_id, job, cache, view["model_sha256"])
            seed = int.from_bytes(entropy(8), "little")
            update, metrics = local_update(view, device_id, weights, seed)
            body["payload"] = _masked(view, device_id, job, number, held, update)
            body["metrics"] = metrics
        else:
            body["payload"] = reveal_shares(
                device_id, held.shares, view["u2"], view["u3"], int(view["threshold"])
            )
        exchange("POST", target, msgpack.packb(body))
        sent.append(str(phase))
        if phase is Phase.UNMASK:
            return {"phase": "unmasked", "sent": sent, "reason": ""}


def _shares(
    view: dict[str, Any],
    me: str,
    job: str,
    number: int,
    held: _Held,
    entropy: Callable[[int], bytes],
) -> dict[str, bytes]:
    keys = held.peers = view["keys"]
    plain = share_secrets(
        held.keys.self_seed, held.keys.s_sk, list(keys), int(view["threshold"]), entropy
    )
    return {
        v: encrypt_share(job, number, me, v, held.keys.c_sk, keys[v]["c_pk"], p)
        for v, p in plain.items()
    }


def _masked(
    view: dict[str, Any], me: str, job: str, number: int, held: _Held, update: np.ndarray
) -> bytes:
    keys, bits = held.peers, int(view["ring_bits"])
    for sender, ciphertext in view["shares"].items():
        held.shares[sender] = decrypt_share(
            job, number, sender, me, held.keys.c_sk, keys[sender]["c_pk"], ciphertext
        )
    seeds = {
        v: mask_seed(job, number, held.keys.s_sk, keys[v]["s_pk"]) for v in view["u2"] if v != me
    }
    return pack(mask_input(update, me, held.keys.self_seed, seeds, bits), bits)
