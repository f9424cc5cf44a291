"""HTTP wire schemas: the web dashboard's aggregates and pages (`services/dashboard.py`).

The service renders these as JSON from SQL aggregates; the models type it and refuse a
field they do not know. Rows that are one SQL row each (alerts, rollouts, audit records,
release events) are sent as the columns the query selects."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Row = dict[str, Any]  # one SQL row: its selected columns, times as ISO 8601 text


class DashboardView(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceRowOut(DashboardView):
    id: str
    name: str
    enrollment: str
    status: str | None = Field(description="online, stale or offline; None unless approved")
    labels: dict[str, str]
    region: str
    site: str
    last_seen: str | None = Field(description="ISO 8601")
    release: str | None
    release_state: str | None


class LocationCountOut(DashboardView):
    region: str
    site: str
    devices: int
    online: int


class ReleaseCountOut(DashboardView):
    release: str | None = Field(description="None: devices running no release")
    devices: int


class TroubleOut(DashboardView):
    open_alerts: int
    alerts: list[Row] = Field(description="The newest open alerts")
    stale: list[DeviceRowOut]
    offline: list[DeviceRowOut]
    rollouts: list[Row] = Field(description="Rollouts failed or rolled back lately")
    nodes: list[Row] = Field(description="Nodes draining, low on battery or loaded")


class NearLimitsOut(DashboardView):
    battery_pct: int | float
    cpu_load: int | float


class OverviewOut(DashboardView):
    at: str = Field(description="ISO 8601")
    status: dict[str, int] = Field(description="Approved devices by connection status")
    enrollment: dict[str, int]
    locations: list[LocationCountOut]
    releases: list[ReleaseCountOut]
    trouble: TroubleOut
    active_rollouts: int
    limits: NearLimitsOut = Field(description="What counts as near a limit")


class DevicePageOut(DashboardView):
    total: int = Field(description="Devices matching, on every page")
    offset: int
    devices: list[DeviceRowOut]


class LivenessOut(DashboardView):
    state: str
    since: str | None
    phi: float
    reliability: float
    last_heartbeat_at: str | None
    node: dict[str, Any] = Field(description="Address, power and load as last reported")
    draining: bool
    drain_reason: str
    replicas: list[dict[str, Any]] = Field(description="The last heartbeat's replica reports")


class PlacedOut(DashboardView):
    workload: str
    replica: int
    generation: int


class DeviceStoryOut(DashboardView):
    device_id: str
    liveness: LivenessOut | None
    placed: list[PlacedOut]
    rollouts: list[Row] = Field(description="Rollouts that targeted it, with its record")
    release_events: list[Row]
    audit: list[Row]


class AuditVerificationOut(DashboardView):
    ok: bool
    records: int
    head_seq: int
    head_hash: str
    problem: str | None
    broken_seq: int | None
