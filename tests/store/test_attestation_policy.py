"""The attestation policy's `workloads` action on the workload controllers: a device whose
attestation fails is cordoned, so its replica migrates to a device that passes (SQLite and
PostgreSQL)."""

from __future__ import annotations

from edgefleet.core.governance.attestation import measurement_digest, parse_policy
from edgefleet.server.services.attestation import AttestationService
from tests.store.test_workload_controllers import Fleet, fleet

__all__ = ["fleet"]  # the fixture, shared with the workload controller tests

# A slot holding a release the control plane never published: the measurement fails.
TAMPERED = {
    "agent": {"sha256": "ab" * 32},
    "slots": {"a": {"release": "rogue", "version": "1", "files": {}}},
    "config": {},
}


def test_a_device_failing_attestation_takes_no_replicas_and_its_replica_moves_off(
    fleet: Fleet,
) -> None:
    node, _ = fleet.where()
    other = "b" if node == "a" else "a"
    service = AttestationService(fleet.db, fleet.clock, parse_policy("workloads"))
    with fleet.db.read() as tx:
        device = tx.devices.get(node)
    record = service.attest(device, "req-1", TAMPERED, measurement_digest(TAMPERED), None)
    assert record.status == "failed" and record.withhold_workloads
    assert record.reason == "slot a: release rogue 1 is not published"
    for _ in range(60):
        fleet.tick()
        if fleet.where()[0] == other:
            break
    assert fleet.where()[0] == other
    assert "workloads" not in fleet.desired(node)
    assert "attestation" not in fleet.desired(node)["labels"]  # no `label` action asked


def test_report_only_changes_nothing_for_a_failing_device(fleet: Fleet) -> None:
    node, generation = fleet.where()
    service = AttestationService(fleet.db, fleet.clock, parse_policy(""))
    with fleet.db.read() as tx:
        device = tx.devices.get(node)
    record = service.attest(device, "req-1", TAMPERED, measurement_digest(TAMPERED), None)
    assert record.status == "failed" and not record.withhold_workloads
    for _ in range(5):
        fleet.tick()
    assert fleet.where() == (node, generation)


def test_with_require_tpm_a_software_measurement_alone_loses_what_the_policy_says(
    fleet: Fleet,
) -> None:
    node, _ = fleet.where()
    clean = {"agent": {"sha256": "ab" * 32}, "slots": {}, "config": {}}
    service = AttestationService(fleet.db, fleet.clock,
                                 parse_policy("workloads,label", require_tpm=True))  # fmt: skip
    with fleet.db.read() as tx:
        device = tx.devices.get(node)
    record = service.attest(device, "req-1", clean, measurement_digest(clean), None)
    assert record.status == "unverified" and record.withhold_workloads
    assert fleet.desired(node)["labels"] == {"attestation": "failed"}
