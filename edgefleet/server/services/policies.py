"""Policy service: the Policy documents in force (apply, list, delete), the checks other
services make with them before they change the fleet, and `policy test`, which evaluates a
manifest against them without applying it.

A refusal is 403 `policy_violation` naming the policy, the rule and why (`core.policy`);
several broken rules are all named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from edgefleet.clock import Clock
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.governance.policy import (
    Policy,
    Violation,
    approval_reasons,
    check_rollout,
    check_workload,
    parse_policy,
)
from edgefleet.core.rollouts.spec import RolloutSpec, parse_rollout_spec
from edgefleet.core.selector import Selector
from edgefleet.core.workloads.workload import Workload, parse_workload
from edgefleet.errors import Forbidden, InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.store import Database, Transaction
from edgefleet.store.repositories.policies import StoredPolicy

Labels = Mapping[str, str]


def policies_in_force(tx: Transaction) -> list[Policy]:
    return [parse_policy(p.document) for p in tx.policies.all()]


def approved_devices(tx: Transaction, selector: Selector) -> dict[str, Labels]:
    """Names and labels of the approved devices `selector` matches."""
    return {
        d.name: d.labels
        for d in tx.devices.all()
        if d.enrollment is EnrollmentState.APPROVED and selector.matches(d.labels)
    }


def enforce(violations: Sequence[Violation]) -> None:
    """Forbidden `policy_violation` naming every broken rule, unless there is none."""
    if violations:
        raise Forbidden("; ".join(str(v) for v in violations), code="policy_violation")


def rollout_verdict(
    tx: Transaction, spec: RolloutSpec, now: datetime
) -> tuple[list[Violation], list[str]]:
    """The rules a rollout of `spec` breaks, and why it needs a second operator's approval."""
    policies = policies_in_force(tx)
    matched = approved_devices(tx, spec.target)
    return check_rollout(policies, spec, matched, now), approval_reasons(policies, spec, matched)


def workload_violations(tx: Transaction, document: Mapping[str, Any]) -> list[Violation]:
    workload = parse_workload(dict(document))
    matched = approved_devices(tx, workload.constraints.selector)
    return check_workload(policies_in_force(tx), workload, matched)


def residency_holds(tx: Transaction, workloads: Sequence[Workload]) -> dict[str, str]:
    """Why the workloads a residency rule in force now refuses (a policy applied, or a
    device relabelled, after they were) get no new placements, by workload name."""
    policies = [p for p in policies_in_force(tx) if p.residency]
    if not policies or not workloads:
        return {}
    approved = [d for d in tx.devices.all() if d.enrollment is EnrollmentState.APPROVED]
    held = {}
    for workload in workloads:
        selector = workload.constraints.selector
        matched = {d.name: d.labels for d in approved if selector.matches(d.labels)}
        violations = check_workload(policies, workload, matched)
        if violations:
            held[workload.name] = "; ".join(str(v) for v in violations)
    return held


class PolicyService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def apply(
        self, ctx: OperatorContext, document: Mapping[str, Any], *, dry_run: bool = False
    ) -> tuple[StoredPolicy, str]:
        """Store a Policy document: (policy, created|updated|unchanged)."""
        ctx.require(Permission.POLICIES_WRITE)
        policy = parse_policy(document)
        now = self._clock.now()
        with self._db.rehearsal() if dry_run else self._db.transaction() as tx:
            existing = tx.policies.find(policy.name)
            if existing is not None and dict(existing.document) == dict(document):
                return existing, "unchanged"
            stored = StoredPolicy(policy.name, dict(document), ctx.actor, now)
            tx.policies.put(stored)
            outcome = "created" if existing is None else "updated"
            record_action(tx, ctx, "policy.apply", f"policy/{policy.name}", now,
                          {"outcome": outcome})  # fmt: skip
        return stored, outcome

    def list_policies(self, ctx: OperatorContext) -> list[StoredPolicy]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.policies.all()

    def delete(self, ctx: OperatorContext, name: str) -> None:
        ctx.require(Permission.POLICIES_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            tx.policies.delete(name)
            record_action(tx, ctx, "policy.delete", f"policy/{name}", now)

    def test(self, ctx: OperatorContext, document: Mapping[str, Any]) -> dict[str, Any]:
        """What the stored policies say about a Rollout or Workload manifest, without
        applying it: the rules it breaks and, for a rollout, why it would wait for a second
        operator."""
        ctx.require(Permission.FLEET_READ)
        kind = document.get("kind")
        with self._db.read() as tx:
            if kind == "Rollout":
                violations, approval = rollout_verdict(
                    tx, parse_rollout_spec(document), self._clock.now()
                )
            elif kind == "Workload":
                violations, approval = workload_violations(tx, document), []
            else:
                raise InvalidInput(f"kind: policy test evaluates Rollout and Workload "
                                   f"manifests, got {kind!r}")  # fmt: skip
            checked = len(tx.policies.all())
        return {
            "kind": kind,
            "policies": checked,
            "allowed": not violations,
            "violations": [
                {"policy": v.policy, "rule": v.rule, "reason": v.reason} for v in violations
            ],
            "needs_approval": approval,
        }
