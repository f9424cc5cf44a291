"""Federated training jobs: apply, the round loop, the device steps, status and report.

The loop (`tick`, run by housekeeping and after every device request of a job) for each
running job, in one transaction per job:

  1. a round is open: move it on (`secure_round.advance`) when its step is over;
  2. it just finished: sum the survivors' masked updates (`secure_round.aggregate`), add
     their mean to the global weights, store the new weights as a blob and as the artifact
     `JOB-model@ROUND`, and record the round's figures; the job is complete after its last
     round (the operator makes the final artifact a release and signs it: docs/learning.md);
  3. it failed (too few clients at some step): record why, and plan the round again;
  4. no round open: plan one (`planner.plan_round`) from the devices' last heartbeats,
     open it and re-render the chosen devices' desired state (its `training` section names
     the round); too few eligible devices: try again at the next tick, and after the job's
     `retries` the job pauses with the planner's reason.

Devices answer a round's steps through `device_view` and `device_answer`; the plane relays
their encrypted shares and never holds an unmasked update (docs/architecture.md).
"""

from __future__ import annotations

import io
import logging
import math
import random
from dataclasses import replace
from datetime import datetime
from typing import Any

import msgpack
import numpy as np

from edgefleet.artifacts.blobstore import BlobStore
from edgefleet.artifacts.onnx_inspect import inspect_onnx
from edgefleet.artifacts.training_model import (
    Weights,
    encode_step,
    encode_weights,
    read_npz,
    read_onnx,
    weights_sha256,
    write_npz,
    write_onnx,
)
from edgefleet.clock import Clock
from edgefleet.core.device import ConnectionStatus, Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.learning.job import (
    JobRecord,
    JobStatus,
    RoundRecord,
    apply_step_values,
    render_task,
    server_step,
    transition,
)
from edgefleet.core.learning.manifest import TrainingSpec, parse_training_manifest
from edgefleet.core.learning.planner import Candidate, plan_round
from edgefleet.core.learning.privacy import epsilon
from edgefleet.core.learning.ring import ring_bits_for
from edgefleet.core.learning.secure_round import (
    Phase,
    accept,
    advance,
    aggregate,
    open_round,
    view_for,
)
from edgefleet.core.updates.install import FINAL_STATES
from edgefleet.core.updates.release import Artifact, ArtifactKind, Ref
from edgefleet.errors import Conflict, InvalidInput, NotFound
from edgefleet.security.rbac import Permission
from edgefleet.security.secure_aggregation import mask_seed
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.desired import refresh_device
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database, Transaction

log = logging.getLogger(__name__)

SAMPLES_PER_SITE = 300
MAX_ANSWER_BYTES = 16 << 20


class TrainingService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        watch: DesiredStateWatch,
        blobs: BlobStore,
        seed: int | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._watch = watch
        self._blobs = blobs
        self._rng = random.Random(seed)

    # Operators.

    def apply(
        self, ctx: OperatorContext, document: dict[str, Any], dry_run: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Start the job a FederatedTraining manifest declares: its status, and whether it
        is new. The same manifest again changes nothing; another one under a job's name is
        a Conflict. A dry run checks the manifest and its model and stores nothing."""
        ctx.require(Permission.RELEASES_WRITE)
        spec = parse_training_manifest(document)
        now = self._clock.now()
        with self._db.transaction() as tx:
            existing = tx.training.find_job(spec.name)
            if existing is not None:
                if dict(existing.document) == document:
                    return self._status(tx, existing), False
                raise Conflict(
                    f"training job {spec.name} exists with another manifest",
                    code="training_job_exists",
                )
            weights, kind = self._initial_weights(tx, spec)
            sha = weights_sha256(weights)
            job = JobRecord(
                spec.name,
                document,
                JobStatus.RUNNING,
                0,
                0,
                "",
                sha,
                sha,
                kind,
                (),
                ctx.actor,
                now,
                now,
            )
            if dry_run:
                return self._status(tx, job), True
            self._store_weights(weights)
            tx.training.insert_job(job)
            record_action(
                tx,
                ctx,
                "training.apply",
                f"training/{spec.name}",
                now,
                {"rounds": spec.rounds, "selector": spec.selector_text},
            )
        self.tick_job(spec.name)
        with self._db.read() as tx:
            return self._status(tx, tx.training.job(spec.name)), True

    def _initial_weights(self, tx: Transaction, spec: TrainingSpec) -> tuple[Weights, str]:
        release = tx.releases.get(Ref(spec.model.release, spec.model.version))
        for ref in release.artifacts:
            artifact = tx.artifacts.get(ref)
            if artifact.file_name == spec.model.artifact or artifact.name == spec.model.artifact:
                blob = self._blobs.path(artifact.sha256).read_bytes()
                if artifact.kind is ArtifactKind.ONNX_MODEL:
                    return read_onnx(blob)[0], "onnx"
                return read_npz(blob)[0], "npz"
        raise InvalidInput(
            f"spec.model.artifact: release {release.name}@{release.version} has "
            f"no file {spec.model.artifact!r}"
        )

    def _store_weights(self, weights: Weights) -> str:
        sha = weights_sha256(weights)
        if not self._blobs.exists(sha):
            self._blobs.put(io.BytesIO(weights.astype("<f4").tobytes()), expected_sha256=sha)
        return sha

    def _weights(self, sha256: str) -> Weights:
        return np.frombuffer(self._blobs.path(sha256).read_bytes(), dtype="<f4").copy()

    def set_status(self, ctx: OperatorContext, name: str, target: JobStatus) -> JobRecord:
        """Pause, resume or cancel a job (the table in core/learning/job.py)."""
        ctx.require(Permission.RELEASES_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            job = tx.training.job(name)
            status = transition(job.status, target)
            job = tx.training.update_job(
                replace(
                    job, status=status, attempt=0, reason=f"{target} by {ctx.actor}", updated_at=now
                )
            )
            record_action(tx, ctx, f"training.{target}", f"training/{name}", now)
        self.tick_job(name)
        return job

    def jobs(self, ctx: OperatorContext) -> list[dict[str, Any]]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return [self._status(tx, job) for job in tx.training.jobs()]

    def status(self, ctx: OperatorContext, name: str) -> dict[str, Any]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return self._status(tx, tx.training.job(name))

    def _status(self, tx: Transaction, job: JobRecord) -> dict[str, Any]:
        spec = parse_training_manifest(job.document)
        current = tx.training.find_round(job.name, job.rounds_done + 1)
        out: dict[str, Any] = {
            "name": job.name,
            "status": str(job.status),
            "rounds": spec.rounds,
            "rounds_done": job.rounds_done,
            "reason": job.reason,
            "strategy": str(spec.strategy),
            "model_sha256": job.model_sha256,
            "history": [dict(h) for h in job.history],
        }
        if current is not None and current.state.phase not in (Phase.DONE, Phase.FAILED):
            out["current"] = {
                "round": current.number,
                "phase": str(current.state.phase),
                "clients": list(current.state.clients),
                "answered": list(current.state.answered()),
            }
        if spec.privacy is not None:
            out["privacy"] = {
                "noise_multiplier": spec.privacy.noise_multiplier,
                "clip_norm": spec.privacy.clip_norm,
                "delta": spec.privacy.delta,
                "epsilon_so_far": _finite(
                    epsilon(spec.privacy.noise_multiplier, job.rounds_done, spec.privacy.delta)
                ),
                "epsilon_at_end": _finite(
                    epsilon(spec.privacy.noise_multiplier, spec.rounds, spec.privacy.delta)
                ),
            }
        if job.status is JobStatus.COMPLETED:
            out["final_artifact"] = f"{_artifact_name(job.name)}@{round_version(job.rounds_done)}"
        return out

    # The loop.

    def tick(self) -> None:
        """Move every running job on (housekeeping calls this)."""
        with self._db.read() as tx:
            names = tx.training.active_names()
        for name in names:
            try:
                self.tick_job(name)
            except Conflict:
                log.info("training tick raced another writer; next tick", extra={"job": name})

    def tick_job(self, name: str) -> None:
        now = self._clock.now()
        touched: list[str] = []
        with self._db.transaction() as tx:
            job = tx.training.job(name)
            if job.status is not JobStatus.RUNNING:
                return
            spec = parse_training_manifest(job.document)
            record = tx.training.find_round(name, job.rounds_done + 1)
            if record is not None and record.state.phase not in (Phase.DONE, Phase.FAILED):
                moved = advance(record.state, now)
                if moved == record.state:
                    return
                record = tx.training.put_round(replace(record, state=moved))
                if moved.phase is Phase.DONE:
                    job = self._finish_round(tx, job, spec, record, now)
                    touched += list(moved.clients)
                elif moved.phase is Phase.FAILED:
                    history = (*job.history, _summary(record, "failed", moved.reason))
                    job = tx.training.update_job(
                        replace(
                            job,
                            attempt=job.attempt + 1,
                            reason=moved.reason,
                            updated_at=now,
                            history=history,
                        )
                    )
                    touched += list(moved.clients)
                else:
                    return
            if job.status is JobStatus.RUNNING and job.rounds_done < spec.rounds:
                touched += self._plan(tx, job, spec, now)
            for device_id in sorted(set(touched)):
                refresh_device(tx, device_id)
        for device_id in sorted(set(touched)):
            self._watch.notify(device_id)

    def _finish_round(
        self,
        tx: Transaction,
        job: JobRecord,
        spec: TrainingSpec,
        record: RoundRecord,
        now: datetime,
    ) -> JobRecord:
        state = record.state
        total = aggregate(state, lambda sk, pk: mask_seed(job.name, state.number, sk, pk))
        survivors = len(state.masked)
        quant = spec.quantisation
        values = server_step(
            total,
            survivors,
            state.ring_bits,
            quant.range,
            quant.bits,
            np.random.default_rng(self._rng.getrandbits(64)),
        )
        weights = apply_step_values(
            self._weights(record.base_sha256), values, quant.range, quant.bits
        )
        sha = self._store_weights(weights)
        step = encode_step(values, quant.range, quant.bits)
        tx.training.put_round(replace(record, step=step))
        self._register_round_artifact(tx, job, record.number, weights, now)
        done = job.rounds_done + 1
        status = JobStatus.COMPLETED if done >= spec.rounds else JobStatus.RUNNING
        reason = "all rounds done" if status is JobStatus.COMPLETED else ""
        return tx.training.update_job(
            replace(
                job,
                rounds_done=done,
                attempt=0,
                model_sha256=sha,
                status=status,
                reason=reason,
                updated_at=now,
                history=(*job.history, _summary(record, "done", "")),
            )
        )

    def _register_round_artifact(
        self, tx: Transaction, job: JobRecord, number: int, weights: Weights, now: datetime
    ) -> None:
        sizes = self._task_sizes(tx, job)
        if job.source_kind == "onnx":
            content = write_onnx(self._source_blob(tx, job), weights, sizes)
            kind, file_name = ArtifactKind.ONNX_MODEL, "model.onnx"
        else:
            content, kind, file_name = write_npz(weights, sizes), ArtifactKind.FILE, "weights.npz"
        info = self._blobs.put(io.BytesIO(content))
        onnx = kind is ArtifactKind.ONNX_MODEL
        facts = inspect_onnx(self._blobs.path(info.sha256)).to_dict() if onnx else {}
        artifact = Artifact(
            _artifact_name(job.name),
            round_version(number),
            kind,
            info.sha256,
            len(content),
            file_name,
            (),
            facts,
            f"training/{job.name}",
            now,
        )
        if tx.artifacts.find(artifact.ref) is None:
            tx.artifacts.insert(artifact)

    def _source_blob(self, tx: Transaction, job: JobRecord) -> bytes:
        spec = parse_training_manifest(job.document)
        release = tx.releases.get(Ref(spec.model.release, spec.model.version))
        for ref in release.artifacts:
            artifact = tx.artifacts.get(ref)
            if spec.model.artifact in (artifact.file_name, artifact.name):
                return self._blobs.path(artifact.sha256).read_bytes()
        raise NotFound(f"the source model of {job.name} is gone")

    def _task_sizes(self, tx: Transaction, job: JobRecord) -> tuple[int, int, int]:
        first = tx.training.find_round(job.name, 1)
        if first is not None:
            i, h, o = (int(s) for s in first.task["sizes"])
            return i, h, o
        blob = self._source_blob(tx, job)
        return read_onnx(blob)[1] if job.source_kind == "onnx" else read_npz(blob)[1]

    def _plan(
        self, tx: Transaction, job: JobRecord, spec: TrainingSpec, now: datetime
    ) -> list[str]:
        number = job.rounds_done + 1
        previous = tx.training.find_round(job.name, number - 1)
        before = frozenset(previous.state.masked) if previous is not None else frozenset()
        plan = plan_round(spec, self._candidates(tx, now), before, job.attempt, self._rng)
        if not plan.clients:
            status = JobStatus.PAUSED if plan.pause else job.status
            tx.training.update_job(
                replace(
                    job, status=status, reason=plan.reason, attempt=job.attempt + 1, updated_at=now
                )
            )
            return []
        sizes = self._task_sizes(tx, job)
        inputs, hidden, outputs = sizes
        length = inputs * hidden + hidden + hidden * outputs + outputs
        ring_bits = ring_bits_for(spec.quantisation.bits, len(plan.clients))
        state = open_round(
            job.name,
            number,
            plan.clients,
            spec.min_clients,
            length,
            ring_bits,
            spec.round_deadline_s,
            now,
        )
        existing = tx.training.find_round(job.name, number)
        record = RoundRecord(
            job.name,
            number,
            state,
            render_task(spec, sizes, SAMPLES_PER_SITE),
            job.model_sha256,
            {},
            {},
            now,
            version=existing.version if existing else 0,
        )
        tx.training.put_round(record)
        tx.training.update_job(replace(job, reason=plan.reason, updated_at=now))
        return list(plan.clients)

    def _candidates(self, tx: Transaction, now: datetime) -> list[Candidate]:
        devices = [d for d in tx.devices.all() if d.enrollment is EnrollmentState.APPROVED]
        health = tx.node_health.find_many([d.id for d in devices])
        out = []
        for device in devices:
            node = dict(health[device.id].node) if device.id in health else {}
            battery = node.get("battery_pct")
            out.append(
                Candidate(
                    id=device.id,
                    labels=dict(device.labels),
                    online=device.connection(now) is ConnectionStatus.ONLINE,
                    battery_pct=None if battery is None else float(battery),
                    charging=node.get("power_source", "mains") == "mains",
                    network=str(device.labels.get("network", "ethernet")),
                    load=float(node.get("cpu_load") or 0.0),
                    in_maintenance=_installing(device),
                )
            )
        return out

    # Devices.

    def device_view(self, device: Device, job: str, number: int) -> bytes:
        """The round as `device` sees it (msgpack), after moving it on if its step is over."""
        self.tick_job(job)
        with self._db.transaction() as tx:
            record = self._device_round(tx, device, job, number)
            view = view_for(record.state, device.id)
            if record.state.phase is Phase.MASKED and view["waiting_for_me"]:
                view["task"] = dict(record.task)
                view["model_sha256"] = record.base_sha256
            body = msgpack.packb(view)
            _count(tx, record, device.id, "down", len(body))
        return body

    def device_answer(self, device: Device, job: str, number: int, body: bytes) -> bytes:
        """Record `device`'s answer to the round's current step; its view after it."""
        try:
            message = msgpack.unpackb(body, strict_map_key=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raise InvalidInput("training answer: not msgpack") from None
        if not isinstance(message, dict) or "phase" not in message or "payload" not in message:
            raise InvalidInput("training answer: expected phase and payload")
        try:
            phase = Phase(message["phase"])
        except ValueError:
            raise InvalidInput(f"training answer: no step {message['phase']!r}") from None
        with self._db.transaction() as tx:
            record = self._device_round(tx, device, job, number)
            state = accept(record.state, device.id, phase, message["payload"])
            metrics = dict(record.metrics)
            if phase is Phase.MASKED and isinstance(message.get("metrics"), dict):
                metrics[device.id] = _read_metrics(message["metrics"])
            record = tx.training.put_round(replace(record, state=state, metrics=metrics))
            _count(tx, record, device.id, "up", len(body))
        return self.device_view(device, job, number)

    def device_model(self, device: Device, job: str, have: str, want: str) -> bytes:
        """The weights `want` as steps from `have` when the plane has that chain, else whole."""
        with self._db.read() as tx:
            tx.training.job(job)
            every = tx.training.rounds(job)
            if device.id not in {c for r in every for c in r.state.clients}:
                raise NotFound(f"device is in no round of {job}", code="training_not_in_job")
            if want not in {r.base_sha256 for r in every}:
                raise NotFound(f"no model {want} in {job}", code="training_model_not_found")
        chain, found = [], have == want
        for record in (r for r in every if r.step is not None):
            if record.base_sha256 == have:
                found = True
            if found and record.base_sha256 != want:
                chain.append(record.step)
            if record.base_sha256 == want:
                break
        if have and found:
            return msgpack.packb({"sha256": want, "steps": chain})
        return msgpack.packb({"sha256": want, "weights": encode_weights(self._weights(want))})

    def _device_round(self, tx: Transaction, device: Device, job: str, number: int) -> RoundRecord:
        record = tx.training.find_round(job, number)
        if record is None or device.id not in record.state.clients:
            raise NotFound(
                f"device is not in round {number} of {job}", code="training_not_in_round"
            )
        return record


def _finite(value: float) -> float | None:
    """JSON has no infinity: no noise, no guarantee, said as None."""
    return value if math.isfinite(value) else None


def round_version(number: int) -> str:
    """The version of round `number`'s model artifact (SemVer, as every artifact's)."""
    return f"0.0.{number}"


def _artifact_name(job: str) -> str:
    return f"{job}-model"[:64]


def _installing(device: Device) -> bool:
    """A device installing a release is in its maintenance window: it does not train."""
    state = device.release_status.get("state")
    return bool(state) and state not in {s.value for s in FINAL_STATES}


def _read_metrics(data: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key in ("accuracy", "samples"):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def _count(tx: Transaction, record: RoundRecord, device_id: str, way: str, size: int) -> None:
    traffic = {d: dict(t) for d, t in record.traffic.items()}
    mine = traffic.setdefault(device_id, {"up": 0, "down": 0})
    mine[way] = mine.get(way, 0) + size
    tx.training.put_round(replace(record, traffic=traffic))


def _summary(record: RoundRecord, outcome: str, reason: str) -> dict[str, Any]:
    state = record.state
    accuracies = [m["accuracy"] for m in record.metrics.values() if "accuracy" in m]
    up = sum(t.get("up", 0) for t in record.traffic.values())
    down = sum(t.get("down", 0) for t in record.traffic.values())
    talking = max(1, len(record.traffic))
    return {
        "round": record.number,
        "outcome": outcome,
        "reason": reason,
        "planned": len(state.clients),
        "clients": list(state.clients),
        "keys": len(state.keys),
        "shares": len(state.shares),
        "masked": len(state.masked),
        "unmasked": len(state.reveals),
        "dropped": list(state.dropped()),
        "accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
        "bytes_up": up,
        "bytes_down": down,
        "bytes_per_client": (up + down) // talking,
        "opened_at": record.opened_at.isoformat(),
    }
