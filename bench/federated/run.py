"""Federated training against Flower: the same task, data split, model and clients, in one
run; FedAvg without dropouts and with 30 % of each round's clients dropping out.

    /tmp/fl-venv/bin/python bench/federated/run.py [--clients 10] [--rounds 10] [--hidden 128]

Flower (`flwr`) must be importable (see the note in docs/learning.md: its pins clash with
the dev environment's FastAPI, Typer, Rich and protobuf, so it lives in a virtualenv of its
own, with this repository installed there `--no-deps`).

The task is edgefleet/examples/federated_task.py: ten classes, non-IID sites (Dirichlet
label mix, shifted inputs), 300 samples per site, the example MLP (16 inputs, --hidden, 10
outputs) from one seed; each client trains 2 local epochs of SGD (batch 32, lr 0.05).
Accuracy is the global model's on a balanced held-out set of the task after each round.

edgefleet: the control plane's round logic (core/learning/secure_round.py: keys, shares,
masked inputs, unmasking, the ring sum; the step and weights coded as the service codes
them) runs in this process behind an `exchange` that stands for the HTTP routes; each
client is the agent's own code (agent/training_client.run_round) on a thread. Bytes are the
msgpack bodies both ways, polls included. Dropouts leave after sending their shares,
before their masked input: the hardest case, whose pairwise masks must be rebuilt.
Flower: flwr.server.Server with its FedAvg strategy and in-process client proxies; bytes are
the serialised FitIns (down) and FitRes (up) protobufs; dropouts raise in fit (Flower's
FedAvg accepts failures). Server CPU is the CPU the server side spent (thread time of its
handlers, serialising included; evaluation excluded) per round.

Targets: final accuracy within 1 point of Flower's FedAvg; <= 0.5x Flower's bytes per
client-round; every round completes with 30 % dropouts. Prints a table; writes
bench/results/federated.md and bench/results/federated.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from edgefleet.agent.training_client import ModelCache, run_round
from edgefleet.artifacts.training_model import (
    encode_step,
    encode_weights,
    weights_sha256,
)
from edgefleet.core.learning.job import apply_step_values, render_task, server_step
from edgefleet.core.learning.manifest import parse_training_manifest
from edgefleet.core.learning.ring import ring_bits_for
from edgefleet.core.learning.secure_round import (
    Phase,
    accept,
    advance,
    aggregate,
    open_round,
    view_for,
)
from edgefleet.examples.federated_task import (
    CLASSES,
    INPUT_SIZE,
    Shapes,
    accuracy,
    global_test_set,
    initial_weights,
    site_data,
    split_layers,
    train_local,
)
from edgefleet.security.secure_aggregation import mask_seed

RESULTS = Path(__file__).resolve().parent.parent / "results"
JOB = "bench"
EPOCHS, BATCH, LR, SAMPLES = 2, 32, 0.05, 300
POLL_S = 0.25  # how often a client looks at its round (the agent: 1 s)


class Dropped(Exception):
    """A client that left the round."""


@dataclass
class Run:
    name: str
    accuracy: list[float] = field(default_factory=list)
    bytes_per_client: list[float] = field(default_factory=list)
    server_cpu_s: list[float] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    completed: int = 0


class Plane:
    """The control plane's round logic in this process, behind the device routes' bodies."""

    def __init__(self, spec: Any, shapes: Shapes, weights: np.ndarray, clients: list[str]) -> None:
        self.spec, self.shapes, self.clients = spec, shapes, clients
        self.weights = weights
        self.models: dict[str, np.ndarray] = {weights_sha256(weights): weights}
        self.steps: list[tuple[str, bytes]] = []  # (base sha, step) of each finished round
        self.lock = threading.Lock()
        self.cpu_s = 0.0
        self.traffic: dict[str, int] = {}

    def open(self, number: int) -> None:
        bits = ring_bits_for(self.spec.quantisation.bits, len(self.clients))
        self.state = open_round(
            JOB,
            number,
            tuple(self.clients),
            self.spec.min_clients,
            self.shapes.length,
            bits,
            self.spec.round_deadline_s,
            datetime.now(UTC),
        )
        self.task = render_task(
            self.spec,
            (self.shapes.input_size, self.shapes.hidden_size, self.shapes.output_size),
            SAMPLES,
        )
        self.base = weights_sha256(self.weights)

    def exchange_for(self, client: str, drop_at_masked: bool) -> Any:
        def exchange(method: str, target: str, body: bytes) -> bytes:
            if drop_at_masked and method == "POST" and msgpack.unpackb(body)["phase"] == "masked":
                raise Dropped(client)
            with self.lock:
                start = time.thread_time()
                answer = self._handle(client, method, target, body)
                self.cpu_s += time.thread_time() - start
                self.traffic[client] = self.traffic.get(client, 0) + len(body) + len(answer)
            return answer

        return exchange

    def _handle(self, client: str, method: str, target: str, body: bytes) -> bytes:
        if "/model?" in target:
            have = target.split("have=")[1].split("&")[0]
            chain, found = [], False
            for base, step in self.steps:
                found = found or base == have
                if found:
                    chain.append(step)
            if have and found:
                return msgpack.packb({"sha256": self.base, "steps": chain})
            return msgpack.packb({"sha256": self.base, "weights": encode_weights(self.weights)})
        if method == "POST":
            message = msgpack.unpackb(body, strict_map_key=False)
            self.state = accept(self.state, client, Phase(message["phase"]), message["payload"])
        self.state = advance(self.state, datetime.now(UTC))
        view = view_for(self.state, client)
        if self.state.phase is Phase.MASKED and view["waiting_for_me"]:
            view["task"], view["model_sha256"] = self.task, self.base
        return msgpack.packb(view)

    def tick(self) -> Phase:
        with self.lock:
            start = time.thread_time()
            self.state = advance(self.state, datetime.now(UTC))
            if self.state.phase is Phase.DONE:
                self._finish()
            self.cpu_s += time.thread_time() - start
            return self.state.phase

    def _finish(self) -> None:
        state, quant = self.state, self.spec.quantisation
        total = aggregate(state, lambda sk, pk: mask_seed(JOB, state.number, sk, pk))
        rng = np.random.default_rng(state.number)
        values = server_step(
            total, len(state.masked), state.ring_bits, quant.range, quant.bits, rng
        )
        self.steps.append((self.base, encode_step(values, quant.range, quant.bits)))
        self.weights = apply_step_values(self.weights, values, quant.range, quant.bits)


def run_edgefleet(
    args: argparse.Namespace, bits: int, dropout: float, test: tuple[Any, Any]
) -> Run:
    shapes = Shapes(INPUT_SIZE, args.hidden, CLASSES)
    clients = [f"site-{i:02d}" for i in range(args.clients)]
    spec = parse_training_manifest(
        {
            "kind": "FederatedTraining",
            "name": JOB,
            "model": {"release": "r", "version": "1.0.0", "artifact": "m"},
            "rounds": args.rounds,
            "clientsPerRound": args.clients,
            "minClients": max(2, args.clients // 2),
            "roundDeadline": args.deadline_s,
            "local": {"epochs": EPOCHS, "batchSize": BATCH, "learningRate": LR},
            "quantisation": {"bits": bits, "range": args.range},
        }
    )
    plane = Plane(spec, shapes, initial_weights(shapes, args.seed), clients)
    run = Run(f"edgefleet FedAvg {bits}-bit, {dropout:.0%} dropout")
    rng = random.Random(args.seed)
    caches = tempfile.TemporaryDirectory()
    for number in range(1, args.rounds + 1):
        plane.open(number)
        plane.traffic, plane.cpu_s = {}, 0.0
        dropping = set(rng.sample(clients, round(dropout * len(clients))))
        threads = []
        for client in clients:
            exchange = plane.exchange_for(client, client in dropping)
            cache = ModelCache(Path(caches.name) / client)
            thread = threading.Thread(target=_client, args=(exchange, client, number, cache))
            thread.start()
            threads.append(thread)
        while plane.tick() not in (Phase.DONE, Phase.FAILED):
            time.sleep(0.01)
        for thread in threads:
            thread.join()
        if plane.state.phase is Phase.DONE:
            run.completed += 1
        run.survivors.append(len(plane.state.masked))
        run.accuracy.append(accuracy(plane.weights, shapes, *test))
        run.bytes_per_client.append(sum(plane.traffic.values()) / len(clients))
        run.server_cpu_s.append(plane.cpu_s)
        print(
            f"  {run.name}: round {number} acc {run.accuracy[-1]:.3f} "
            f"bytes/client {run.bytes_per_client[-1]:.0f}",
            flush=True,
        )
    caches.cleanup()
    return run


def _client(exchange: Any, client: str, number: int, cache: ModelCache) -> None:
    with contextlib.suppress(Dropped):
        run_round(
            exchange, client, JOB, number, cache, secrets.token_bytes, lambda: time.sleep(POLL_S)
        )


def run_flower(args: argparse.Namespace, dropout: float, test: tuple[Any, Any]) -> Run:
    from flwr.common import (
        Code,
        FitRes,
        Status,
        ndarrays_to_parameters,
        parameters_to_ndarrays,
        serde,
    )
    from flwr.server import Server, SimpleClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.strategy import FedAvg

    shapes = Shapes(INPUT_SIZE, args.hidden, CLASSES)
    clients = [f"site-{i:02d}" for i in range(args.clients)]
    run = Run(f"Flower FedAvg, {dropout:.0%} dropout")
    meter = {"bytes": 0, "cpu": 0.0, "eval": 0.0, "ok": 0}
    rng = random.Random(args.seed)
    dropping: set[str] = set()
    layers = ("W1", "b1", "W2", "b2")

    def to_vector(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([a.ravel() for a in arrays]).astype(np.float32)

    class Proxy(ClientProxy):  # type: ignore[misc]
        def fit(self, ins: Any, timeout: Any, group_id: Any) -> Any:
            start = time.thread_time()
            down = serde.fit_ins_to_proto(ins).SerializeToString()  # the server sends it
            served = time.thread_time() - start
            with lock:
                meter["bytes"] += len(down)
                meter["cpu"] += served
            if self.cid in dropping:
                raise ConnectionError(f"{self.cid} dropped out")
            received = serde.fit_ins_from_proto(type(serde.fit_ins_to_proto(ins)).FromString(down))
            weights = to_vector(parameters_to_ndarrays(received.parameters))
            x, y, _, _ = site_data(self.cid, SAMPLES)
            trained = train_local(
                weights,
                shapes,
                x,
                y,
                epochs=EPOCHS,
                batch_size=BATCH,
                learning_rate=LR,
                mu=0.0,
                rng=np.random.default_rng(),
            )
            arrays = [a.astype(np.float32) for a in split_layers(trained, shapes).values()]
            res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), int(y.size), {})
            up = serde.fit_res_to_proto(res).SerializeToString()
            start = time.thread_time()
            parsed = serde.fit_res_from_proto(type(serde.fit_res_to_proto(res)).FromString(up))
            with lock:
                meter["bytes"] += len(up)
                meter["cpu"] += time.thread_time() - start
                meter["ok"] += 1
            return parsed

        def get_parameters(self, ins: Any, timeout: Any, group_id: Any) -> Any:
            raise NotImplementedError

        def evaluate(self, ins: Any, timeout: Any, group_id: Any) -> Any:
            raise NotImplementedError

        def get_properties(self, ins: Any, timeout: Any, group_id: Any) -> Any:
            raise NotImplementedError

        def reconnect(self, ins: Any, timeout: Any, group_id: Any) -> Any:
            raise NotImplementedError

    lock = threading.Lock()

    def evaluate(
        number: int, arrays: list[np.ndarray], config: Any
    ) -> tuple[float, dict[str, Any]]:
        start = time.thread_time()
        value = accuracy(to_vector(arrays), shapes, *test)
        meter["eval"] += time.thread_time() - start
        if number > 0:
            run.accuracy.append(value)
            run.bytes_per_client.append(meter["bytes"] / len(clients))
            run.server_cpu_s.append(meter["cpu"])
            run.survivors.append(meter["ok"])
            run.completed += int(meter["ok"] >= max(2, len(clients) // 2))
            print(
                f"  {run.name}: round {number} acc {value:.3f} "
                f"bytes/client {run.bytes_per_client[-1]:.0f}",
                flush=True,
            )
        meter.update(bytes=0, cpu=0.0, ok=0)
        dropping.clear()
        dropping.update(rng.sample(clients, round(dropout * len(clients))))
        return 0.0, {"accuracy": value}

    initial = initial_weights(shapes, args.seed)
    arrays = [a.astype(np.float32) for a in split_layers(initial, shapes).values()]
    assert tuple(split_layers(initial, shapes)) == layers
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=2,
        min_available_clients=len(clients),
        evaluate_fn=evaluate,
        accept_failures=True,
        initial_parameters=ndarrays_to_parameters(arrays),
    )
    manager = SimpleClientManager()
    for cid in clients:
        manager.register(Proxy(cid))
    server = Server(client_manager=manager, strategy=strategy)
    start = time.thread_time()
    server.fit(num_rounds=args.rounds, timeout=None)
    main_thread = time.thread_time() - start - meter["eval"]
    # The main thread configured, aggregated and evaluated; add its share per round.
    run.server_cpu_s = [c + main_thread / args.rounds for c in run.server_cpu_s]
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 7])
    parser.add_argument("--range", type=float, default=0.25)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--deadline-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    test = global_test_set(4000)
    runs = []
    for dropout in (0.0, args.dropout):
        runs.append(run_flower(args, dropout, test))
        for bits in args.bits:
            runs.append(run_edgefleet(args, bits, dropout, test))
    report(args, runs)


def report(args: argparse.Namespace, runs: list[Run]) -> None:
    flower = {r.name.split(",")[1]: r for r in runs if r.name.startswith("Flower")}
    rows = []
    for r in runs:
        base = flower[r.name.split(",")[1]]
        rows.append(
            {
                "run": r.name,
                "final_accuracy": r.accuracy[-1],
                "accuracy_vs_flower_points": 100 * (r.accuracy[-1] - base.accuracy[-1]),
                "bytes_per_client_round": float(np.mean(r.bytes_per_client)),
                "bytes_vs_flower": float(
                    np.mean(r.bytes_per_client) / np.mean(base.bytes_per_client)
                ),
                "server_cpu_ms_per_round": 1000 * float(np.mean(r.server_cpu_s)),
                "rounds_completed": f"{r.completed}/{len(r.accuracy)}",
                "mean_survivors": float(np.mean(r.survivors)),
                "accuracy_per_round": [round(a, 4) for a in r.accuracy],
                "bytes_per_client_per_round": [round(b) for b in r.bytes_per_client],
            }
        )
    header = (
        "| run | final acc | vs Flower (pts) | bytes/client-round | vs Flower | "
        "server CPU ms/round | rounds done | survivors |"
    )
    lines = [header, "|" + "---|" * 8]
    for row in rows:
        lines.append(
            f"| {row['run']} | {100 * row['final_accuracy']:.1f}% | "
            f"{row['accuracy_vs_flower_points']:+.1f} | "
            f"{row['bytes_per_client_round']:.0f} | {row['bytes_vs_flower']:.2f}x | "
            f"{row['server_cpu_ms_per_round']:.1f} | {row['rounds_completed']} | "
            f"{row['mean_survivors']:.1f} |"
        )
    per_round = ["", "Accuracy per round:", ""]
    for row in rows:
        per_round.append(
            f"- {row['run']}: " + ", ".join(f"{a:.3f}" for a in row["accuracy_per_round"])
        )
    setup = (
        f"{args.clients} clients, {args.rounds} rounds, MLP {INPUT_SIZE}-{args.hidden}-"
        f"{CLASSES} ({Shapes(INPUT_SIZE, args.hidden, CLASSES).length} weights), "
        f"{EPOCHS} local epochs, {SAMPLES} samples per site, updates quantised to "
        f"{' or '.join(map(str, args.bits))} bits within +-{args.range}; "
        f"dropout {args.dropout:.0%} per round"
    )
    text = "\n".join(
        [
            "# Federated training: edgefleet against Flower",
            "",
            "`/tmp/fl-venv/bin/python bench/federated/run.py` (bench/federated/run.py"
            " says how it measures).",
            "",
            setup,
            "",
            *lines,
            *per_round,
            "",
        ]
    )
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "federated.md").write_text(text)
    (RESULTS / "federated.json").write_text(
        json.dumps({"setup": vars(args), "runs": rows}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
