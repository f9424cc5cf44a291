"""Operator API for alerts: KPI anomalies, drift and cohort outliers."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from edgefleet.core.durations import parse_duration
from edgefleet.core.telemetry.alerts import Alert
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.alerts import AlertOut
from edgefleet.server.services.alerts import AlertFilter
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1/alerts", tags=["alerts"])


def alert_out(alert: Alert) -> AlertOut:
    return AlertOut(
        id=alert.id,
        device_id=alert.device_id,
        kind=alert.kind.value,
        kpi=alert.kpi,
        metrics=list(alert.metrics),
        status=alert.status.value,
        opened_at=alert.opened_at,
        open_reason=alert.open_reason,
        value=alert.value,
        score=alert.score,
        closed_at=alert.closed_at,
        close_reason=alert.close_reason,
    )


@router.get(
    "",
    summary="Open alerts, newest first (with all=true also recently closed ones)",
    response_model=list[AlertOut],
)
def list_alerts(
    all: bool = Query(False, description="Include alerts closed within `closed_within`"),
    closed_within: str = Query("24h", description="How far back closed alerts are listed"),
    device: str | None = Query(None, description="Only this device (id or name)"),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[AlertOut]:
    wanted = AlertFilter(all, parse_duration(closed_within).total_seconds(), device)
    return [alert_out(a) for a in svc.alerts.list_alerts(ctx, wanted)]
