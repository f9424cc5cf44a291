"""Release trains as operators declare them, and the train's next step.

A train is a standing schedule: an ordered list of releases rolled out one after the other
with the same rollout template. The first rollout starts as soon as its release is signed;
each later one starts by itself once the previous rollout succeeded with passing gates
(`release_train.may_start_next`) and its own release is signed. A rollout that did not
vouch for its release stops the train, with the reason; the operator takes over.

    kind: ReleaseTrain
    metadata: {name: vision}
    spec:
      releases: [vision@1.1.0, vision@1.2.0]      # in order; append to extend the train
      rollout:                                   # a Rollout spec without `release`
        target: "kind=camera"
        strategy: {waves: [1, "25%", "100%"], soak: 30m}
        gates: {workload_error_rate: {max_percent: 1}}
      allow_insufficient_data: false             # may a rollout whose final gates lacked
                                                 # data let the train go on?

Re-applying a train may append releases and change the template for rollouts not started
yet; the releases already started keep their place.

>>> train = parse_release_train({"kind": "ReleaseTrain", "name": "vision",
...     "releases": ["vision@1.1.0", "vision@1.2.0"], "rollout": {"target": "kind=camera"}})
>>> train.rollout_manifest(1)["metadata"]["name"]
'vision-1-2-0'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from edgefleet.core.manifest import read_list, read_mapping, read_string, split_manifest
from edgefleet.core.rollouts.release_train import may_start_next
from edgefleet.core.rollouts.rollout import FINAL_STATES, Rollout
from edgefleet.core.rollouts.spec import ReleaseRef, parse_rollout_spec
from edgefleet.errors import Conflict, InvalidInput

MAX_TRAIN_RELEASES = 200
_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_SPEC_KEYS = frozenset({"releases", "rollout", "allow_insufficient_data", "description"})


class TrainState(StrEnum):
    RUNNING = "running"  # rolling out, or waiting for its next release
    STOPPED = "stopped"  # a rollout did not vouch for its release; an operator takes over


@dataclass(frozen=True)
class ReleaseTrainSpec:
    name: str
    releases: tuple[ReleaseRef, ...]
    rollout: Mapping[str, Any]  # the Rollout spec template (no `release`)
    allow_insufficient_data: bool = False
    description: str = ""

    def rollout_manifest(self, index: int) -> dict[str, Any]:
        """The Rollout manifest of the train's `index`-th release."""
        release = self.releases[index]
        suffix = re.sub(r"[^a-z0-9]+", "-", release.version.lower()).strip("-") or str(index + 1)
        name = f"{self.name}-{suffix}"[:63].rstrip("-")
        return {
            "kind": "Rollout",
            "metadata": {"name": name},
            "spec": {**self.rollout, "release": str(release)},
        }


@dataclass(frozen=True)
class TrainRecord:
    """A stored train: its spec and manifest, and how far it has come."""

    spec: ReleaseTrainSpec
    manifest: Mapping[str, Any]
    state: TrainState
    reason: str
    position: int  # index of the release whose rollout is current (0 before the first)
    rollout_id: str | None  # that rollout; None before the first
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int = 1

    @property
    def name(self) -> str:
        return self.spec.name


def parse_release_train(data: Mapping[str, object]) -> ReleaseTrainSpec:
    """A validated train from a `kind: ReleaseTrain` document; errors name the field."""
    parts = split_manifest(data, "ReleaseTrain", _SPEC_KEYS)
    prefix = parts.prefix
    if parts.name is None:
        raise InvalidInput(f"{parts.name_path}: required (the train's name)")
    name = read_string(parts.name, parts.name_path)
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"{parts.name_path}: invalid train name {name!r}: use lowercase letters, digits "
            "and '-', at most 40 characters"
        )
    spec = parts.spec
    if "releases" not in spec:
        raise InvalidInput(f"{prefix}releases: required (a list of name@version)")
    items = read_list(spec["releases"], f"{prefix}releases")
    if not 1 <= len(items) <= MAX_TRAIN_RELEASES:
        raise InvalidInput(f"{prefix}releases: expected 1 to {MAX_TRAIN_RELEASES} releases")
    releases: list[ReleaseRef] = []
    for i, item in enumerate(items):
        path = f"{prefix}releases[{i}]"
        try:
            ref = ReleaseRef.parse(read_string(item, path))
        except InvalidInput as e:
            raise InvalidInput(f"{path}: {e.message}") from None
        if ref in releases:
            raise InvalidInput(f"{path}: {ref} is listed twice")
        releases.append(ref)
    template = dict(read_mapping(spec.get("rollout", {}), f"{prefix}rollout"))
    if "release" in template:
        raise InvalidInput(
            f"{prefix}rollout.release: not allowed here; the train names the releases"
        )
    try:
        parse_rollout_spec({**template, "release": str(releases[0])})
    except InvalidInput as e:
        raise type(e)(f"{prefix}rollout.{e.message}") from None
    allow = spec.get("allow_insufficient_data", False)
    if not isinstance(allow, bool):
        raise InvalidInput(f"{prefix}allow_insufficient_data: expected true or false")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise InvalidInput(f"{prefix}description: expected a string")
    return ReleaseTrainSpec(name, tuple(releases), template, allow, description)


def check_train_update(old: ReleaseTrainSpec, new: ReleaseTrainSpec, started: int) -> None:
    """Refuse an update that moves or drops a release whose rollout already started
    (`started` releases, counted from the first)."""
    if new.releases[:started] != old.releases[:started]:
        kept = ", ".join(str(r) for r in old.releases[:started])
        raise Conflict(
            f"train {old.name}: the first {started} release(s) ({kept}) have started; "
            "an update may only append releases or change later ones",
            code="train_conflict",
        )


@dataclass(frozen=True)
class TrainStep:
    """What a train does next: start the rollout of release `start` (an index), or stop,
    or wait; always with the reason."""

    reason: str
    start: int | None = None
    stop: bool = False


def next_train_step(
    spec: ReleaseTrainSpec,
    position: int,
    current: Rollout | None,
    signed: Mapping[str, bool],
) -> TrainStep:
    """The step of a running train whose rollout of `spec.releases[position]` is `current`
    (None: the train has not started any rollout yet, `position` is 0). `signed` says, by
    `name@version`, which releases are signed (absent: not created yet)."""
    if current is None:
        first = spec.releases[0]
        if signed.get(str(first)):
            return TrainStep(f"starting with {first}", start=0)
        return TrainStep(f"waiting for {first} to be {_wanted(signed, first)}")
    if current.state not in FINAL_STATES:
        return TrainStep(f"{spec.releases[position]}: rollout {current.id} is {current.state}")
    verdict = may_start_next(current, allow_insufficient_data=spec.allow_insufficient_data)
    if not verdict.may_start:
        return TrainStep(f"stopped: {verdict.reason}", stop=True)
    if position + 1 >= len(spec.releases):
        return TrainStep(
            f"{verdict.reason}; all {len(spec.releases)} release(s) rolled out — append "
            "releases to the train to go on"
        )
    nxt = spec.releases[position + 1]
    if not signed.get(str(nxt)):
        return TrainStep(f"{verdict.reason}; waiting for {nxt} to be {_wanted(signed, nxt)}")
    return TrainStep(f"{verdict.reason}; starting {nxt}", start=position + 1)


def _wanted(signed: Mapping[str, bool], release: ReleaseRef) -> str:
    return "signed" if str(release) in signed else "created and signed"
