"""A rehearsal scenario: the rollout manifest, the fleet (drawn from a profile or copied from a
control plane) and the facts a profile adds (releases, bad model, faults, workloads), put
together into a ready-to-run `Rehearsal`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from edgefleet.client import FleetClient
from edgefleet.core.rollouts.spec import RolloutSpec, parse_rollout_spec
from edgefleet.errors import InvalidInput
from edgefleet.sim.lab.fleet_copy import copy_fleet, copy_telemetry_delivery, release_facts
from edgefleet.sim.lab.fleet_model import LabDevice, lab_fleet_from_profile
from edgefleet.sim.lab.rehearsal import Rehearsal, RehearsalConfig
from edgefleet.sim.lab.telemetry_model import DEFAULT_DELIVERY, TelemetryDelivery
from edgefleet.sim.model_behaviour import BadModel
from edgefleet.sim.profile import FleetProfile, load_profile

_ID_RE = re.compile(r"[^a-z0-9-]+")


def load_rollout(path: Path) -> tuple[RolloutSpec, Mapping[str, Any]]:
    """The rollout spec of a manifest file (and the raw document)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InvalidInput(f"{path}: cannot read the rollout manifest: {e}") from None
    try:
        return parse_rollout_spec(data), data
    except InvalidInput as e:
        raise InvalidInput(f"{path.name}: {e.message}", code="invalid_rollout") from None


# Reports coalesced into one controller decision per this many simulated seconds at most:
# as the control plane (which decides on each report) up to this many devices, ...
EXACT_CONTROLLER_UP_TO = 1000
EXACT_CONTROLLER_INTERVAL_S = 1.0
LARGE_FLEET_CONTROLLER_INTERVAL_S = 15.0  # ... and coarser above, for speed


def default_controller_interval_s(devices: int) -> float:
    """The lab controller's interval for a fleet of `devices` (see the constants above)."""
    if devices <= EXACT_CONTROLLER_UP_TO:
        return EXACT_CONTROLLER_INTERVAL_S
    return LARGE_FLEET_CONTROLLER_INTERVAL_S


@dataclass(frozen=True)
class Scenario:
    rollout: RolloutSpec
    rollout_id: str
    devices: list[LabDevice]
    profile: FleetProfile | None
    source: str
    releases: Mapping[str, Any]
    # When the fleet was copied (or drawn): a rehearsal starts there unless told otherwise,
    # so maintenance windows and soaks fall where they would for a rollout started now.
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # How workload telemetry reaches the control plane (the fleet's telemetry policy).
    telemetry: TelemetryDelivery = DEFAULT_DELIVERY

    def rehearsal(
        self,
        *,
        start: datetime | None = None,
        hours: float,
        seed: int,
        bad_release: bool,
        controller_interval_s: float | None = None,
        bad_model: BadModel | None = None,
    ) -> Rehearsal:
        """`start`: default `taken_at`; `controller_interval_s`: default by fleet size
        (`default_controller_interval_s`); `bad_model`: how a bad release behaves (default:
        the profile's, or BadModel())."""
        profile = self.profile
        if controller_interval_s is None:
            controller_interval_s = default_controller_interval_s(len(self.devices))
        config = RehearsalConfig(
            rollout=self.rollout,
            rollout_id=self.rollout_id,
            start=self.taken_at if start is None else start,
            hours=hours,
            seed=seed,
            bad_release=bad_release,
            bad_model=bad_model or (profile.bad_model if profile else BadModel()),
            bad_patterns=profile.bad_releases if profile else (),
            faults=profile.faults if profile else (),
            workloads=profile.workloads if profile else (),
            releases=self.releases,
            controller_interval_s=controller_interval_s,
            source=self.source,
            telemetry=self.telemetry,
        )
        return Rehearsal(config, self.devices)


def rollout_id_for(spec: RolloutSpec, given: str | None) -> str:
    """The id the rehearsal plans waves with: given, or the manifest's name."""
    if given:
        return given
    return _ID_RE.sub("-", (spec.name or f"rehearse-{spec.release.name}").lower()).strip("-")


def scenario_from_profile(
    spec: RolloutSpec,
    profile_name: str,
    devices: int,
    seed: int | None,
    rollout_id: str | None = None,
    current_release: str | None = None,
) -> Scenario:
    profile = load_profile(profile_name)
    fleet = lab_fleet_from_profile(profile, devices, profile.seed if seed is None else seed,
                                   current_release)  # fmt: skip
    return Scenario(
        spec,
        rollout_id_for(spec, rollout_id),
        fleet,
        profile,
        f"profile {profile.name}",
        {r.release: r for r in profile.releases},
    )


def scenario_from_server(
    spec: RolloutSpec,
    client: FleetClient,
    rollout_id: str | None = None,
    selector: str | None = None,
    since: str = "24h",
    profile_name: str | None = None,
) -> Scenario:
    profile = load_profile(profile_name) if profile_name else None
    fleet = copy_fleet(client, selector, since)
    release = str(spec.release)
    source = f"copied from {client.server_url}"
    releases = {r.release: r for r in profile.releases} if profile is not None else {}
    facts = release_facts(client, release)
    if facts is not None:
        releases[release] = facts
    elif release not in releases:
        source += f"; {release} is not on that server: default size, no requirements"
    # The releases the devices run now are the ones a rollback reinstalls: their health
    # windows and limits decide how long a rollback takes and whether it succeeds.
    for current in sorted({d.current_release for d in fleet if d.current_release} - {release}):
        facts = release_facts(client, current)
        if facts is not None:
            releases[current] = facts
    delivery = copy_telemetry_delivery(client)
    taken_at = datetime.now(UTC)  # copied: a rollout created now starts about here
    return Scenario(spec, rollout_id_for(spec, rollout_id), fleet, profile, source, releases,
                    taken_at, delivery)  # fmt: skip
