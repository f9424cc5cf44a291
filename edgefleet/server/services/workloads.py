"""Workload service: what operators do with workloads (apply, list, show, delete, migrate,
abort), what placement decided and why (show, explain), and the weighted endpoints that
clients of a workload's service follow.

Applying only records the declaration (and re-renders the nodes already holding it, whose
replicas may need a new spec); the placement controller places it on its next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edgefleet.artifacts.blobstore import BlobStore
from edgefleet.clock import Clock
from edgefleet.core.selector import Selector, parse_selector
from edgefleet.core.updates.release import ArtifactKind
from edgefleet.core.updates.service_manifest import parse_service_manifest, resolve_parameters
from edgefleet.core.workloads.endpoints import Endpoint, ReplicaCopy, service_endpoints
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.migration import (
    TARGET_RUNS,
    Migration,
    MigrationTrigger,
    abort_migration,
)
from edgefleet.core.workloads.migration_targets import choose_migration_target
from edgefleet.core.workloads.move import PlacementMove
from edgefleet.core.workloads.node_health import NodeHealth
from edgefleet.core.workloads.placement import Explanation, Node, Topology, explain
from edgefleet.core.workloads.record import WorkloadRecord, resolve_release_ref
from edgefleet.core.workloads.workload import parse_workload
from edgefleet.errors import Conflict, InvalidInput, NotFound
from edgefleet.security.rbac import Permission
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.desired import refresh_device
from edgefleet.server.services.fleet_view import FleetView, load_view
from edgefleet.server.services.node_trends import DestinationForecast
from edgefleet.server.services.placement_controller import new_migration_id
from edgefleet.server.services.policies import enforce, workload_violations
from edgefleet.server.services.releases import read_service_manifest
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database, Transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaView:
    """One replica: where the placement has it, what was decided, what the node reports."""

    replica: int
    node_id: str | None
    node_name: str | None
    generation: int | None
    liveness: Liveness | None
    decision: Mapping[str, Any] | None
    report: Mapping[str, Any] | None
    address: str | None


@dataclass(frozen=True)
class WorkloadStatus:
    record: WorkloadRecord
    replicas: tuple[ReplicaView, ...]
    migrations: tuple[Migration, ...]  # active ones
    names: Mapping[str, str]  # device id -> name


@dataclass(frozen=True)
class NodeView:
    device_id: str
    name: str
    node: Node
    health: NodeHealth
    replicas: int


@dataclass(frozen=True)
class ServiceEndpoints:
    service: str
    endpoints: tuple[Endpoint, ...]
    names: Mapping[str, str]


class WorkloadService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        watch: DesiredStateWatch,
        blobs: BlobStore,
        forecast: DestinationForecast | None = None,  # as the placement controller has it
    ) -> None:
        self._db = db
        self._clock = clock
        self._watch = watch
        self._blobs = blobs
        self._forecast = forecast

    def now(self) -> datetime:
        return self._clock.now()

    # -- declarations ------------------------------------------------------------------------

    def apply(
        self, ctx: OperatorContext, document: Mapping[str, Any], *, dry_run: bool = False
    ) -> tuple[WorkloadRecord, str]:
        """Create or update a workload from its manifest: (record, created|updated|unchanged).
        A dry run decides the same in a transaction that is rolled back."""
        ctx.require(Permission.WORKLOADS_WRITE)
        spec = parse_workload(dict(document))
        now = self._clock.now()
        refreshed: list[str] = []
        with self._db.rehearsal() if dry_run else self._db.transaction() as tx:
            releases = tx.releases.all()
            refs = tuple(resolve_release_ref(ref, releases) for ref in spec.artifacts)
            services = [
                artifact
                for ref in refs
                for artifact in map(tx.artifacts.get, tx.releases.get(ref).artifacts)
                if artifact.kind is ArtifactKind.SERVICE
            ]
            if not services:
                raise InvalidInput(
                    "spec.artifacts: a workload runs what a signed release's service manifest "
                    "says, and none of these releases carries one (an artifact of kind service)",
                    code="unsigned_command",
                )
            # The device runs the first manifest, as it finds them in this order.
            manifest = parse_service_manifest(
                read_service_manifest(self._blobs, services[0].sha256)
            )
            resolve_parameters(manifest, spec.parameters)
            existing = tx.workloads.find(spec.name)
            # Where it may run now, and, for an update, where it ran: a scoped operator
            # neither places replicas outside the scope nor takes them from there.
            selectors = [spec.constraints.selector]
            if existing is not None:
                selectors.append(parse_workload(dict(existing.document)).constraints.selector)
            for selector in selectors:
                _require_in_scope(tx, ctx, selector)
            enforce(workload_violations(tx, document))
            if existing is None:
                record = WorkloadRecord(spec.name, dict(document), refs, ctx.actor, now,
                                        ctx.actor, now)  # fmt: skip
                tx.workloads.insert(record)
                outcome = "created"
            elif dict(existing.document) == dict(document) and existing.releases == refs:
                return existing, "unchanged"
            else:
                record = tx.workloads.update(WorkloadRecord(
                    spec.name, dict(document), refs, existing.created_by, existing.created_at,
                    ctx.actor, now, existing.version,
                ))  # fmt: skip
                outcome = "updated"
            record_action(tx, ctx, "workload.apply", f"workload/{spec.name}", now, {
                "outcome": outcome, "replicas": spec.replicas,
                "releases": [str(r) for r in refs],
            })  # fmt: skip
            refreshed = [d for d in _holders(tx, spec.name) if refresh_device(tx, d)]
        if not dry_run:
            self._notify(refreshed)
        return record, outcome

    def delete(self, ctx: OperatorContext, name: str) -> None:
        """Forget the workload; the placement controller stops its replicas."""
        ctx.require(Permission.WORKLOADS_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            existing = tx.workloads.find(name)
            if existing is not None:
                placed_by = parse_workload(dict(existing.document)).constraints.selector
                _require_in_scope(tx, ctx, placed_by)
            tx.workloads.delete(name)
            tx.placement_moves.forget(name)
            record_action(tx, ctx, "workload.delete", f"workload/{name}", now)
            refreshed = [d for d in _holders(tx, name) if refresh_device(tx, d)]
        self._notify(refreshed)

    # -- what is where -------------------------------------------------------------------

    def list_workloads(self, ctx: OperatorContext) -> list[WorkloadStatus]:
        ctx.require(Permission.FLEET_READ)
        view = self._view()
        return [_status(view, name) for name in sorted(view.workloads)]

    def get(self, ctx: OperatorContext, name: str) -> WorkloadStatus:
        ctx.require(Permission.FLEET_READ)
        view = self._view()
        if name not in view.workloads:
            raise NotFound(f"no workload named {name!r}", code="workload_not_found")
        return _status(view, name)

    def explain(self, ctx: OperatorContext, name: str) -> tuple[Explanation, dict[str, str]]:
        """Every candidate node's score terms for each replica, or why it was excluded."""
        ctx.require(Permission.FLEET_READ)
        view = self._view()
        if name not in view.workloads:
            raise NotFound(f"no workload named {name!r}", code="workload_not_found")
        result = explain(name, view.specs, view.nodes(self._forecast), Topology(),
                         view.placement.placement, view.now)  # fmt: skip
        if self._forecast is not None:  # the nodes it scored are the controller's forecast
            result = replace(result, decisions=tuple(map(self._forecast.noted, result.decisions)))
        return result, _names(view)

    def nodes(self, ctx: OperatorContext) -> list[NodeView]:
        """Every node as the controllers see it: liveness (phi), reliability, drain, power."""
        ctx.require(Permission.FLEET_READ)
        view = self._view()
        placed: dict[str, int] = {}
        for a in view.placement.placement.assignments:
            placed[a.node_id] = placed.get(a.node_id, 0) + 1
        return [
            NodeView(
                device_id=node.id, name=view.devices[node.id].name, node=node,
                health=view.health[node.id], replicas=placed.get(node.id, 0),
            )
            for node in sorted(view.nodes(), key=lambda n: view.devices[n.id].name)
        ]  # fmt: skip

    def endpoints(self, name: str) -> ServiceEndpoints:
        """The workload's service endpoints with their traffic weights."""
        view = self._view()
        if name not in view.workloads:
            raise NotFound(f"no service named {name!r}", code="service_not_found")
        primaries = [
            _copy(view, a.replica, a.node_id, a.generation, name)
            for a in view.placement.placement.assignments
            if a.workload == name
        ]
        targets = [
            (_copy(view, m.replica, m.target, m.generation, name), m)
            for m in view.migrations
            if m.workload == name and m.state in TARGET_RUNS
        ]
        return ServiceEndpoints(name, service_endpoints(primaries, targets), _names(view))

    # -- migrations ----------------------------------------------------------------------

    def migrate(
        self,
        ctx: OperatorContext,
        name: str,
        replica: int,
        to: str | None,
        selector: str | None,
    ) -> Migration:
        """Queue a planned migration of one replica to a node, or to the best node matching
        a selector; Conflict with the reason when no node can take it."""
        ctx.require(Permission.WORKLOADS_WRITE)
        if (to is None) == (selector is None):
            raise InvalidInput("give exactly one of 'to' (a device) or 'selector'")
        now = self._clock.now()
        with self._db.transaction() as tx:
            view = load_view(tx, now)
            if name not in view.workloads:
                raise NotFound(f"no workload named {name!r}", code="workload_not_found")
            _require_in_scope(tx, ctx, view.workloads[name].spec.constraints.selector)
            target_id = None if to is None else tx.devices.resolve(to).id
            busy = [m for m in view.migrations if (m.workload, m.replica) == (name, replica)]
            if busy:
                raise Conflict(f"{name}[{replica}] is already migrating ({busy[0].id}, "
                               f"{busy[0].state})", code="migration_in_progress")  # fmt: skip
            choice = choose_migration_target(
                name, replica, view.specs, view.nodes(self._forecast), Topology(),
                view.placement.placement, now, to=target_id,
                selector=None if selector is None else parse_selector(selector),
            )  # fmt: skip
            if choice.node_id is None:
                raise Conflict(f"cannot migrate {name}[{replica}]: {choice.reason}",
                               code="no_migration_target")  # fmt: skip
            note = "" if self._forecast is None else f"; {self._forecast.note}"
            source = next(a for a in view.placement.placement.assignments
                          if (a.workload, a.replica) == (name, replica))  # fmt: skip
            migration = Migration(
                id=new_migration_id(), workload=name, replica=replica, source=source.node_id,
                target=choice.node_id, trigger=MigrationTrigger.OPERATOR,
                reason=f"requested by {ctx.actor}: {choice.reason}{note}",
                stateful=view.workloads[name].spec.stateful, created_by=ctx.actor,
                created_at=now, source_generation=source.generation,
            )  # fmt: skip
            tx.migrations.insert(migration)
            record_action(tx, ctx, "workload.migrate", f"workload/{name}", now, {
                "migration": migration.id, "replica": replica, "from": source.node_id,
                "to": choice.node_id,
            })  # fmt: skip
        return migration

    def device_names(self) -> dict[str, str]:
        with self._db.read() as tx:
            return {d.id: d.name for d in tx.devices.all()}

    def abort(self, ctx: OperatorContext, name: str) -> list[Migration]:
        """Abort the workload's active migrations: every replica goes back to its source."""
        ctx.require(Permission.WORKLOADS_WRITE)
        now = self._clock.now()
        aborted: list[Migration] = []
        refreshed: list[str] = []
        with self._db.transaction() as tx:
            document = tx.workloads.get(name).document
            _require_in_scope(tx, ctx, parse_workload(dict(document)).constraints.selector)
            for m in tx.migrations.active():
                if m.workload != name:
                    continue
                aborted.append(tx.migrations.update(
                    abort_migration(m, now, f"aborted by {ctx.actor}")))  # fmt: skip
                record_action(tx, ctx, "workload.migration-abort", f"workload/{name}", now,
                              {"migration": m.id, "step": m.state.value})  # fmt: skip
                refreshed += [d for d in (m.source, m.target) if refresh_device(tx, d)]
            if not aborted:
                raise Conflict(f"workload {name} has no migration in progress",
                               code="no_migration")  # fmt: skip
        self._notify(refreshed)
        return aborted

    def migrations(self, ctx: OperatorContext, name: str) -> tuple[list[Migration], dict[str, str]]:
        """The workload's migrations, newest first, and device names."""
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            tx.workloads.get(name)
            names = {d.id: d.name for d in tx.devices.all()}
            return tx.migrations.of_workload(name), names

    def moves(
        self, ctx: OperatorContext, name: str, limit: int
    ) -> tuple[list[PlacementMove], dict[str, str]]:
        """The workload's newest replica moves, newest first, and device names."""
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            tx.workloads.get(name)
            names = {d.id: d.name for d in tx.devices.all()}
            return tx.placement_moves.of_workload(name, limit), names

    def _view(self) -> FleetView:
        with self._db.read() as tx:
            return load_view(tx, self._clock.now())

    def _notify(self, device_ids: list[str]) -> None:
        for device_id in device_ids:
            self._watch.notify(device_id)


def _require_in_scope(tx: Transaction, ctx: OperatorContext, selector: Selector) -> None:
    """Forbidden `out_of_scope` unless a workload placed by `selector` stays in the caller's
    device scope."""
    matched = {d.name: d.labels for d in tx.devices.all() if selector.matches(d.labels)}
    ctx.principal.require_on_selector(Permission.WORKLOADS_WRITE, selector, matched)


def _holders(tx: Transaction, name: str) -> set[str]:
    """Devices holding a replica of `name`, or receiving one by migration."""
    placement = tx.placement.load().placement
    held = {a.node_id for a in placement.assignments if a.workload == name}
    for m in tx.migrations.active():
        if m.workload == name:
            held.update((m.source, m.target))
    return held


def _names(view: FleetView) -> dict[str, str]:
    return {d.id: d.name for d in view.devices.values()}


def _copy(view: FleetView, replica: int, node_id: str, generation: int, name: str) -> ReplicaCopy:
    health = view.health.get(node_id)
    report = None if health is None else health.report_of(name, replica)
    copy = None if health is None else health.copy_status(name, replica)
    port = None if report is None else report.get("port")
    return ReplicaCopy(
        replica=replica,
        node_id=node_id,
        generation=generation,
        address=None if health is None else health.address,
        port=None if port is None else int(port),
        healthy=copy is not None and copy.generation == generation and copy.healthy,
        alive=view.liveness(node_id) is Liveness.ALIVE,
    )


def _status(view: FleetView, name: str) -> WorkloadStatus:
    record = view.workloads[name]
    placed = {a.replica: a for a in view.placement.placement.assignments if a.workload == name}
    decided = {d["replica"]: d for d in view.placement.decisions if d["workload"] == name}
    names = _names(view)
    replicas = []
    for replica in sorted(set(range(record.spec.replicas)) | set(placed)):
        a = placed.get(replica)
        health = None if a is None else view.health.get(a.node_id)
        replicas.append(ReplicaView(
            replica=replica,
            node_id=None if a is None else a.node_id,
            node_name=None if a is None else names.get(a.node_id),
            generation=None if a is None else a.generation,
            liveness=None if a is None else view.liveness(a.node_id),
            decision=decided.get(replica),
            report=None if health is None else health.report_of(name, replica),
            address=None if health is None else health.address,
        ))  # fmt: skip
    active = tuple(m for m in view.migrations if m.workload == name)
    return WorkloadStatus(record, tuple(replicas), active, names)
