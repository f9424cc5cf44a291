"""The `kind: FederatedTraining` manifest: what to train, on which devices, for how long.

    kind: FederatedTraining
    metadata: {name: keyboard-v2}
    spec:
      model: {release: kbd-model, version: "3", artifact: weights.npz}
      task: synthetic-sites            # the example task (edgefleet/examples/federated_task)
      selector: "role=sensor"
      rounds: 3
      clientsPerRound: 4
      minClients: 3                    # and the secure-aggregation threshold t
      roundDeadline: 2m
      strategy: {name: fedprox, mu: 0.01}
      local: {epochs: 2, batchSize: 32, learningRate: 0.1}
      privacy: {clipNorm: 1.0, noiseMultiplier: 0.8, delta: 1e-5}
      quantisation: {bits: 8, range: 0.25}
      eligibility: {minBatteryPct: 30, networks: [ethernet, wifi], maxLoad: 0.8,
                    regions: [eu]}
      retries: 3

`minClients` is also the Shamir threshold: a round needs that many clients at every step,
and any fewer colluding with the control plane learn nothing of one update.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edgefleet.core.manifest import (
    check_keys,
    read_choice,
    read_duration_s,
    read_int,
    read_list,
    read_mapping,
    read_number,
    read_string,
    split_manifest,
)
from edgefleet.core.selector import Selector, parse_selector
from edgefleet.errors import InvalidInput

KIND = "FederatedTraining"
MAX_ROUNDS = 1000
MAX_CLIENTS_PER_ROUND = 256
MAX_ROUND_DEADLINE_S = 7 * 24 * 3600.0
TASKS = frozenset({"synthetic-sites"})
NETWORKS = frozenset({"ethernet", "wifi", "cellular"})

_SPEC_KEYS = frozenset(
    {
        "model",
        "task",
        "selector",
        "rounds",
        "clientsPerRound",
        "minClients",
        "roundDeadline",
        "strategy",
        "local",
        "privacy",
        "quantisation",
        "eligibility",
        "retries",
    }
)


class Strategy(StrEnum):
    FEDAVG = "fedavg"
    FEDPROX = "fedprox"


@dataclass(frozen=True)
class ModelSource:
    """The initial weights: one artifact (ONNX or an .npz weight file) of a release."""

    release: str
    version: str
    artifact: str


@dataclass(frozen=True)
class LocalTraining:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.1


@dataclass(frozen=True)
class Privacy:
    """Clip each update to `clip_norm` (L2) and add Gaussian noise of `noise_multiplier` x
    clip_norm to the aggregate, shared among the clients (docs/learning.md)."""

    clip_norm: float
    noise_multiplier: float = 0.0
    delta: float = 1e-5


@dataclass(frozen=True)
class Quantisation:
    """Each coordinate of an update is clipped to [-range, range] and rounded
    (stochastically, so without bias) to a signed integer of `bits` bits."""

    bits: int = 8
    range: float = 0.25


@dataclass(frozen=True)
class Eligibility:
    min_battery_pct: float = 30.0  # unless charging
    networks: frozenset[str] = frozenset({"ethernet", "wifi"})
    max_load: float = 0.8  # the load average per CPU (1.0: every core busy)
    regions: frozenset[str] = frozenset()  # empty: any; else the device's `region` label


@dataclass(frozen=True)
class TrainingSpec:
    name: str
    model: ModelSource
    task: str
    selector: Selector
    selector_text: str
    rounds: int
    clients_per_round: int
    min_clients: int
    round_deadline_s: float
    strategy: Strategy
    mu: float
    local: LocalTraining
    privacy: Privacy | None
    quantisation: Quantisation
    eligibility: Eligibility
    retries: int


def parse_training_manifest(data: object) -> TrainingSpec:
    """A FederatedTraining manifest, every field checked (InvalidInput names the field)."""
    parts = split_manifest(data, KIND, _SPEC_KEYS)
    p, spec = parts.prefix, parts.spec
    name = read_string(parts.name, parts.name_path)
    if "model" not in spec:
        raise InvalidInput(f"{p}model: required (release, version, artifact)")
    model = read_mapping(spec["model"], f"{p}model")
    check_keys(model, frozenset({"release", "version", "artifact"}), f"{p}model")
    for key in ("release", "version", "artifact"):
        if key not in model:
            raise InvalidInput(f"{p}model.{key}: required")
    source = ModelSource(
        read_string(model["release"], f"{p}model.release"),
        read_string(str(model["version"]), f"{p}model.version"),
        read_string(model["artifact"], f"{p}model.artifact"),
    )
    task = read_string(spec.get("task", "synthetic-sites"), f"{p}task")
    if task not in TASKS:
        raise InvalidInput(f"{p}task: expected one of {', '.join(sorted(TASKS))}, got {task!r}")
    selector_text = str(spec.get("selector", "") or "")
    selector = parse_selector(selector_text)
    rounds = read_int(spec.get("rounds", 3), f"{p}rounds", 1, MAX_ROUNDS)
    per_round = read_int(
        spec.get("clientsPerRound", 4), f"{p}clientsPerRound", 2, MAX_CLIENTS_PER_ROUND
    )
    minimum = read_int(
        spec.get("minClients", max(2, per_round // 2 + 1)), f"{p}minClients", 2, per_round
    )
    deadline = read_duration_s(
        spec.get("roundDeadline", "10m"), f"{p}roundDeadline", MAX_ROUND_DEADLINE_S, positive=True
    )
    strategy, mu = _read_strategy(spec.get("strategy", {"name": "fedavg"}), f"{p}strategy")
    return TrainingSpec(
        name=name,
        model=source,
        task=task,
        selector=selector,
        selector_text=selector_text,
        rounds=rounds,
        clients_per_round=per_round,
        min_clients=minimum,
        round_deadline_s=deadline,
        strategy=strategy,
        mu=mu,
        local=_read_local(spec.get("local", {}), f"{p}local"),
        privacy=_read_privacy(spec.get("privacy"), f"{p}privacy"),
        quantisation=_read_quantisation(spec.get("quantisation", {}), f"{p}quantisation"),
        eligibility=_read_eligibility(spec.get("eligibility", {}), f"{p}eligibility"),
        retries=read_int(spec.get("retries", 3), f"{p}retries", 0, 100),
    )


def _read_strategy(value: object, path: str) -> tuple[Strategy, float]:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"name", "mu"}), path)
    strategy = read_choice(data.get("name", "fedavg"), f"{path}.name", Strategy)
    if strategy is Strategy.FEDAVG and "mu" in data:
        raise InvalidInput(f"{path}.mu: only for fedprox")
    mu = read_number(
        data.get("mu", 0.01 if strategy is Strategy.FEDPROX else 0.0), f"{path}.mu", 0.0, 100.0
    )
    return strategy, mu


def _read_local(value: object, path: str) -> LocalTraining:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"epochs", "batchSize", "learningRate"}), path)
    return LocalTraining(
        epochs=read_int(data.get("epochs", 1), f"{path}.epochs", 1, 100),
        batch_size=read_int(data.get("batchSize", 32), f"{path}.batchSize", 1, 65536),
        learning_rate=read_number(
            data.get("learningRate", 0.1), f"{path}.learningRate", 1e-6, 10.0
        ),
    )


def _read_privacy(value: object, path: str) -> Privacy | None:
    if value is None:
        return None
    data = read_mapping(value, path)
    check_keys(data, frozenset({"clipNorm", "noiseMultiplier", "delta"}), path)
    if "clipNorm" not in data:
        raise InvalidInput(f"{path}.clipNorm: required")
    return Privacy(
        clip_norm=read_number(data["clipNorm"], f"{path}.clipNorm", 1e-6, 1e6),
        noise_multiplier=read_number(
            data.get("noiseMultiplier", 0.0), f"{path}.noiseMultiplier", 0.0, 1e3
        ),
        delta=read_number(data.get("delta", 1e-5), f"{path}.delta", 1e-12, 0.1),
    )


def _read_quantisation(value: object, path: str) -> Quantisation:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"bits", "range"}), path)
    return Quantisation(
        bits=read_int(data.get("bits", 8), f"{path}.bits", 2, 16),
        range=read_number(data.get("range", 0.25), f"{path}.range", 1e-9, 1e6),
    )


def _read_eligibility(value: object, path: str) -> Eligibility:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"minBatteryPct", "networks", "maxLoad", "regions"}), path)
    networks = frozenset(
        read_string(n, f"{path}.networks[{i}]")
        for i, n in enumerate(
            read_list(data.get("networks", ["ethernet", "wifi"]), f"{path}.networks")
        )
    )
    if not networks or not networks <= NETWORKS:
        raise InvalidInput(f"{path}.networks: expected some of {', '.join(sorted(NETWORKS))}")
    regions = frozenset(
        read_string(r, f"{path}.regions[{i}]")
        for i, r in enumerate(read_list(data.get("regions", []), f"{path}.regions"))
    )
    return Eligibility(
        min_battery_pct=read_number(
            data.get("minBatteryPct", 30), f"{path}.minBatteryPct", 0.0, 100.0
        ),
        networks=networks,
        max_load=read_number(data.get("maxLoad", 0.8), f"{path}.maxLoad", 0.0, 1000.0),
        regions=regions,
    )
