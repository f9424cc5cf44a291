"""Stored training jobs and rounds (`core.learning.job`), each written with a version check."""

from __future__ import annotations

from typing import Any

import msgpack
from sqlalchemy import Connection, Row, insert, select, update

from edgefleet.core.learning.job import JobRecord, JobStatus, RoundRecord
from edgefleet.core.learning.secure_round import Phase, state_from_wire, state_to_wire
from edgefleet.errors import Conflict, NotFound
from edgefleet.store.tables import training_jobs, training_rounds


def _job(row: Row[Any]) -> JobRecord:
    return JobRecord(
        name=row.name,
        document=row.document,
        status=JobStatus(row.status),
        rounds_done=row.rounds_done,
        attempt=row.attempt,
        reason=row.reason,
        model_sha256=row.model_sha256,
        initial_sha256=row.initial_sha256,
        source_kind=row.source_kind,
        history=tuple(row.history),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
    )


def _job_values(job: JobRecord) -> dict[str, Any]:
    return {
        "name": job.name,
        "document": dict(job.document),
        "status": str(job.status),
        "rounds_done": job.rounds_done,
        "attempt": job.attempt,
        "reason": job.reason,
        "model_sha256": job.model_sha256,
        "initial_sha256": job.initial_sha256,
        "source_kind": job.source_kind,
        "history": [dict(h) for h in job.history],
        "created_by": job.created_by,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def _round(row: Row[Any]) -> RoundRecord:
    return RoundRecord(
        job=row.job,
        number=row.number,
        state=state_from_wire(msgpack.unpackb(row.state, strict_map_key=False)),
        task=row.task,
        base_sha256=row.base_sha256,
        traffic=row.traffic,
        metrics=row.metrics,
        opened_at=row.opened_at,
        step=row.step,
        version=row.version,
    )


def _round_values(record: RoundRecord) -> dict[str, Any]:
    return {
        "job": record.job,
        "number": record.number,
        "phase": str(record.state.phase),
        "clients": list(record.state.clients),
        "state": msgpack.packb(state_to_wire(record.state)),
        "task": dict(record.task),
        "base_sha256": record.base_sha256,
        "traffic": {d: dict(t) for d, t in record.traffic.items()},
        "metrics": {d: dict(m) for d, m in record.metrics.items()},
        "opened_at": record.opened_at,
        "step": record.step,
    }


class TrainingRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def insert_job(self, job: JobRecord) -> None:
        if self.find_job(job.name) is not None:
            raise Conflict(f"training job {job.name} exists", code="training_job_exists")
        self._c.execute(insert(training_jobs).values(**_job_values(job), version=0))

    def find_job(self, name: str) -> JobRecord | None:
        row = self._c.execute(select(training_jobs).where(training_jobs.c.name == name)).first()
        return None if row is None else _job(row)

    def job(self, name: str) -> JobRecord:
        job = self.find_job(name)
        if job is None:
            raise NotFound(f"no training job {name!r}", code="training_job_not_found")
        return job

    def jobs(self) -> list[JobRecord]:
        rows = self._c.execute(select(training_jobs).order_by(training_jobs.c.name))
        return [_job(r) for r in rows]

    def active_names(self) -> list[str]:
        query = select(training_jobs.c.name).where(training_jobs.c.status == JobStatus.RUNNING)
        return list(self._c.execute(query.order_by(training_jobs.c.name)).scalars())

    def update_job(self, job: JobRecord) -> JobRecord:
        result = self._c.execute(
            update(training_jobs)
            .where(training_jobs.c.name == job.name, training_jobs.c.version == job.version)
            .values(**_job_values(job), version=job.version + 1)
        )
        if result.rowcount != 1:
            raise Conflict(
                f"training job {job.name} was changed concurrently; retry", code="concurrent_update"
            )
        return self.job(job.name)

    def find_round(self, job: str, number: int) -> RoundRecord | None:
        row = self._c.execute(
            select(training_rounds).where(
                training_rounds.c.job == job, training_rounds.c.number == number
            )
        ).first()
        return None if row is None else _round(row)

    def rounds(self, job: str) -> list[RoundRecord]:
        rows = self._c.execute(
            select(training_rounds)
            .where(training_rounds.c.job == job)
            .order_by(training_rounds.c.number)
        )
        return [_round(r) for r in rows]

    def put_round(self, record: RoundRecord) -> RoundRecord:
        """Insert a round, or replace it (a retried round) if nobody changed it since read."""
        existing = self.find_round(record.job, record.number)
        if existing is None:
            self._c.execute(insert(training_rounds).values(**_round_values(record), version=0))
        else:
            result = self._c.execute(
                update(training_rounds)
                .where(
                    training_rounds.c.job == record.job,
                    training_rounds.c.number == record.number,
                    training_rounds.c.version == record.version,
                )
                .values(**_round_values(record), version=record.version + 1)
            )
            if result.rowcount != 1:
                raise Conflict(
                    f"round {record.number} of {record.job} was changed concurrently; retry",
                    code="concurrent_update",
                )
        found = self.find_round(record.job, record.number)
        assert found is not None
        return found

    def open_rounds(self) -> list[tuple[str, int, frozenset[str]]]:
        """(job, round, devices planned) of the rounds still running."""
        running = (Phase.KEYS, Phase.SHARES, Phase.MASKED, Phase.UNMASK)
        columns = (training_rounds.c.job, training_rounds.c.number, training_rounds.c.clients)
        rows = self._c.execute(
            select(*columns).where(training_rounds.c.phase.in_([str(p) for p in running]))
        )
        return sorted((r.job, r.number, frozenset(r.clients)) for r in rows)

    def open_rounds_of(self, device_id: str) -> list[tuple[str, int]]:
        """(job, round) of the rounds still running that planned `device_id`."""
        return [(job, n) for job, n, clients in self.open_rounds() if device_id in clients]
