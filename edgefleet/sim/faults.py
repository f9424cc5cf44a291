"""Fault schedules: what goes wrong in a simulated fleet, and when, as a profile declares it.

    faults:
      - {kind: agent-crash, at: 20m, devices: 2%, restart_after: 30s}
      - {kind: agent-crash, every: 6h, devices: 1}
      - {kind: node-death, at: 2h, devices: 3, class: gateway}     # gone for good...
      - {kind: node-death, at: 3h, devices: 1, return_after: 30m}  # ...or back later
      - {kind: partition, at: 4h, duration: 10m, region: eu-west}  # cut off, then back
      - {kind: battery-drain, at: 1h, devices: 5%, drain_percent_per_hour: 60}
      - {kind: node-death, at: 2h, hosting: detector}            # a node running a replica

`devices` is a count or a share of the devices the filters (`class`, `region`, `zone`,
`hosting`) leave; it defaults to 1, and to all of them for a partition. `hosting` keeps the
nodes the profile's workloads are first placed on, so a failover is rehearsed for sure: the
lab places workloads itself, while in `sim run` placement is the control plane's, so a
fault filtered by `hosting` has no device to hit there and is skipped. Which devices are hit
is drawn from the seed, so a schedule is the same on every run. `at` is the first time
(default: `every`, or 0), `every` repeats until the end of the run.

`schedule_faults` turns the declarations into a sorted list of `FaultEvent`s for a given
fleet and horizon; `sim run` and `lab rehearse` both play that list.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from edgefleet.core.manifest import (
    check_keys,
    read_choice,
    read_duration_s,
    read_mapping,
    read_number,
    read_string,
)
from edgefleet.core.rollouts.waves import Quantity
from edgefleet.errors import InvalidInput

MAX_TIME_S = 366 * 86400.0
MAX_EVENTS = 100_000


class FaultKind(StrEnum):
    AGENT_CRASH = "agent-crash"
    NODE_DEATH = "node-death"
    PARTITION = "partition"
    BATTERY_DRAIN = "battery-drain"


@dataclass(frozen=True)
class FaultSpec:
    kind: FaultKind
    at_s: float | None = None
    every_s: float | None = None
    devices: Quantity | None = None  # None: the kind's default
    device_class: str | None = None
    region: str | None = None
    zone: str | None = None
    hosting: str | None = None  # a workload: only nodes it is placed on
    duration_s: float = 0.0  # partition
    restart_after_s: float = 10.0  # agent crash
    return_after_s: float | None = None  # node death: None means gone for good
    drain_percent_per_hour: float = 0.0  # battery drain


@dataclass(frozen=True)
class FaultTarget:
    """What a schedule needs to know about one device to pick targets."""

    index: int
    device_class: str
    region: str
    zone: str
    hosting: frozenset[str] = frozenset()  # workloads placed on it


@dataclass(frozen=True)
class FaultEvent:
    at_s: float
    kind: FaultKind
    device_indices: tuple[int, ...]
    spec_index: int  # which declaration it comes from
    duration_s: float = 0.0
    restart_after_s: float = 0.0
    return_after_s: float | None = None
    drain_percent_per_hour: float = 0.0

    def describe(self) -> str:
        n = len(self.device_indices)
        what = {
            FaultKind.AGENT_CRASH: f"agent crash on {n} device(s), restart after "
            f"{self.restart_after_s:g}s",
            FaultKind.NODE_DEATH: f"node death of {n} device(s)"
            + ("" if self.return_after_s is None else f", back after {self.return_after_s:g}s"),
            FaultKind.PARTITION: f"partition of {n} device(s) for {self.duration_s:g}s",
            FaultKind.BATTERY_DRAIN: f"battery drain at {self.drain_percent_per_hour:g}%/h "
            f"on {n} device(s)",
        }
        return what[self.kind]


_KEYS = frozenset({"kind", "at", "every", "devices", "class", "region", "zone", "hosting",
                   "duration", "restart_after", "return_after",
                   "drain_percent_per_hour"})  # fmt: skip


def parse_fault(value: object, path: str) -> FaultSpec:
    """One entry of the profile's `faults` list; InvalidInput names the field."""
    data = read_mapping(value, path)
    check_keys(data, _KEYS, path)
    if "kind" not in data:
        raise InvalidInput(f"{path}.kind: required ({'|'.join(FaultKind)})")
    kind = read_choice(data["kind"], f"{path}.kind", FaultKind)
    at_s = None if "at" not in data else read_duration_s(data["at"], f"{path}.at", MAX_TIME_S)
    every_s = None
    if "every" in data:
        every_s = read_duration_s(data["every"], f"{path}.every", MAX_TIME_S, positive=True)
    if at_s is None and every_s is None:
        raise InvalidInput(f"{path}: give 'at' (a time into the run) or 'every' (a period)")
    devices = None
    if "devices" in data:
        try:
            devices = Quantity.parse(data["devices"])
        except InvalidInput as e:
            raise InvalidInput(f"{path}.devices: {e.message}") from None
    duration_s = 0.0
    if kind is FaultKind.PARTITION:
        if "duration" not in data:
            raise InvalidInput(f"{path}.duration: required for a partition")
        duration_s = read_duration_s(
            data["duration"], f"{path}.duration", MAX_TIME_S, positive=True
        )
    elif "duration" in data:
        raise InvalidInput(f"{path}.duration: only a partition has a duration")
    drain = 0.0
    if kind is FaultKind.BATTERY_DRAIN:
        if "drain_percent_per_hour" not in data:
            raise InvalidInput(f"{path}.drain_percent_per_hour: required for a battery drain")
        drain = read_number(
            data["drain_percent_per_hour"], f"{path}.drain_percent_per_hour", 0.001, 100_000
        )
    return_after = None
    if "return_after" in data:
        if kind is not FaultKind.NODE_DEATH:
            raise InvalidInput(f"{path}.return_after: only a node death has one")
        return_after = read_duration_s(
            data["return_after"], f"{path}.return_after", MAX_TIME_S, positive=True
        )
    filters = {
        key: None if key not in data else read_string(data[key], f"{path}.{key}")
        for key in ("class", "region", "zone", "hosting")
    }
    return FaultSpec(
        kind=kind,
        at_s=at_s,
        every_s=every_s,
        devices=devices,
        device_class=filters["class"],
        region=filters["region"],
        zone=filters["zone"],
        hosting=filters["hosting"],
        duration_s=duration_s,
        restart_after_s=read_duration_s(data.get("restart_after", 10.0),
                                        f"{path}.restart_after", MAX_TIME_S),
        return_after_s=return_after,
        drain_percent_per_hour=drain,
    )  # fmt: skip


def _matches(spec: FaultSpec, target: FaultTarget) -> bool:
    return (
        (spec.device_class is None or spec.device_class == target.device_class)
        and (spec.region is None or spec.region == target.region)
        and (spec.zone is None or spec.zone == target.zone)
        and (spec.hosting is None or spec.hosting in target.hosting)
    )


def _times(spec: FaultSpec, horizon_s: float) -> list[float]:
    if spec.every_s is None:
        return [spec.at_s] if spec.at_s is not None and spec.at_s < horizon_s else []
    first = spec.every_s if spec.at_s is None else spec.at_s
    times: list[float] = []
    t = first
    while t < horizon_s and len(times) < MAX_EVENTS:
        times.append(t)
        t += spec.every_s
    return times


def schedule_faults(
    specs: Sequence[FaultSpec],
    targets: Sequence[FaultTarget],
    horizon_s: float,
    seed: int,
) -> list[FaultEvent]:
    """Every fault occurrence before `horizon_s`, in time order, with its devices drawn
    from `seed` (the same inputs always give the same schedule)."""
    events: list[FaultEvent] = []
    for i, spec in enumerate(specs):
        eligible = [t.index for t in targets if _matches(spec, t)]
        if not eligible:
            continue
        quantity = spec.devices
        if quantity is None:
            count = len(eligible) if spec.kind is FaultKind.PARTITION else 1
        else:
            count = max(1, quantity.resolve(len(eligible)))
        for n, at_s in enumerate(_times(spec, horizon_s)):
            rng = random.Random(f"fault:{seed}:{i}:{n}")
            chosen = tuple(sorted(rng.sample(eligible, min(count, len(eligible)))))
            events.append(FaultEvent(
                at_s, spec.kind, chosen, i, spec.duration_s, spec.restart_after_s,
                spec.return_after_s, spec.drain_percent_per_hour,
            ))  # fmt: skip
    events.sort(key=lambda e: (e.at_s, e.spec_index))
    return events


def fault_to_document(event: FaultEvent, names: Mapping[int, str]) -> dict[str, object]:
    """A scheduled event as plain data, with device names."""
    return {
        "at_s": event.at_s,
        "kind": event.kind.value,
        "devices": [names.get(i, str(i)) for i in event.device_indices],
        "description": event.describe(),
    }
