"""Alerts table: KPI anomalies and drift, open and recently closed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, insert, select, update

from edgefleet.core.telemetry.alerts import Alert, AlertKind, AlertStatus
from edgefleet.errors import Conflict, NotFound
from edgefleet.store.tables import alerts


def _to_alert(row: Row[Any]) -> Alert:
    return Alert(
        id=row.id,
        device_id=row.device_id,
        kind=AlertKind(row.kind),
        kpi=row.kpi,
        metrics=tuple(row.metrics),
        status=AlertStatus(row.status),
        opened_at=row.opened_at,
        open_reason=row.open_reason,
        value=row.value,
        score=row.score,
        closed_at=row.closed_at,
        close_reason=row.close_reason,
    )


def _values(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "device_id": alert.device_id,
        "kind": alert.kind.value,
        "kpi": alert.kpi,
        "metrics": list(alert.metrics),
        "status": alert.status.value,
        "opened_at": alert.opened_at,
        "open_reason": alert.open_reason,
        "value": alert.value,
        "score": alert.score,
        "closed_at": alert.closed_at,
        "close_reason": alert.close_reason,
    }


# Every device's desired state reads it when rendered: built once.
_OPEN_FOR_DEVICE = (
    select(alerts)
    .where(alerts.c.device_id == bindparam("b_device"), alerts.c.status == AlertStatus.OPEN.value)
    .order_by(alerts.c.opened_at)
)


class AlertRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def get(self, alert_id: str) -> Alert:
        row = self._c.execute(select(alerts).where(alerts.c.id == alert_id)).first()
        if row is None:
            raise NotFound(f"no alert {alert_id!r}", code="alert_not_found")
        return _to_alert(row)

    def open_for_device(self, device_id: str) -> list[Alert]:
        return [_to_alert(r) for r in self._c.execute(_OPEN_FOR_DEVICE, {"b_device": device_id})]

    def open_alerts(self) -> list[Alert]:
        query = (
            select(alerts)
            .where(alerts.c.status == AlertStatus.OPEN.value)
            .order_by(alerts.c.opened_at, alerts.c.id)
        )
        return [_to_alert(r) for r in self._c.execute(query)]

    def listing(
        self,
        *,
        include_closed: bool,
        closed_since: datetime | None = None,
        device_ids: Sequence[str] | None = None,
        limit: int = 500,
    ) -> list[Alert]:
        """Open alerts, plus (with `include_closed`) those closed since `closed_since`;
        newest first."""
        query = select(alerts)
        if include_closed:
            if closed_since is not None:
                query = query.where(
                    (alerts.c.status == AlertStatus.OPEN.value)
                    | (alerts.c.closed_at >= closed_since)
                )
        else:
            query = query.where(alerts.c.status == AlertStatus.OPEN.value)
        if device_ids is not None:
            query = query.where(alerts.c.device_id.in_(list(device_ids)))
        query = query.order_by(alerts.c.opened_at.desc(), alerts.c.id).limit(limit)
        return [_to_alert(r) for r in self._c.execute(query)]

    def count_open_by_kind(self) -> dict[str, int]:
        query = (
            select(alerts.c.kind, func.count())
            .where(alerts.c.status == AlertStatus.OPEN.value)
            .group_by(alerts.c.kind)
        )
        return {str(kind): int(n) for kind, n in self._c.execute(query)}

    def insert(self, alert: Alert) -> None:
        self._c.execute(insert(alerts).values(**_values(alert)))

    def close(self, alert: Alert) -> None:
        """Store `alert` closed, if it is still open (Conflict otherwise)."""
        result = self._c.execute(
            update(alerts)
            .where(alerts.c.id == alert.id, alerts.c.status == AlertStatus.OPEN.value)
            .values(
                status=alert.status.value,
                closed_at=alert.closed_at,
                close_reason=alert.close_reason,
            )
        )
        if result.rowcount != 1:
            raise Conflict(f"alert {alert.id} was closed concurrently", code="concurrent_update")

    def prune_closed(self, before: datetime) -> int:
        result = self._c.execute(
            delete(alerts).where(
                alerts.c.status == AlertStatus.CLOSED.value, alerts.c.closed_at < before
            )
        )
        return int(result.rowcount)
