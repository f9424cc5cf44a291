"""HTTP wire schemas: telemetry uploads, queries, KPI summaries and the telemetry policy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from edgefleet.server.schemas.base import Strict


class TelemetryCursorOut(BaseModel):
    device_id: str
    acked_through_seq: int
    batches_stored: int
    windows_stored: int
    dropped_batches_total: int = Field(description="As last reported by the device.")
    dropped_windows_total: int
    last_batch_at: datetime | None
    clock_skew_s: int | None = Field(
        description="The device's clock minus the server's when its last batch arrived "
        "(positive: ahead)."
    )
    shifted_batches: int = Field(
        description="Batches whose windows were moved onto the server's clock "
        "(docs/telemetry.md, Device clocks)."
    )
    shifted_windows: int
    last_shift_s: int = Field(description="How far the last moved batch was moved.")
    largest_shift_s: int = Field(description="The largest move in magnitude, with its sign.")
    last_shift_reason: str | None = Field(description="Why the last moved batch was moved.")


class TelemetryPointOut(BaseModel):
    time: datetime = Field(description="Start of the bucket (or of the summarized span).")
    start_s: int
    length_s: int
    count: int
    sum: float
    mean: float
    min: float
    max: float
    last: float
    quantile: float | None = Field(None, description="From merged sketches (timings only).")
    windows: int = Field(description="Stored windows merged into this point.")


class TelemetrySeriesOut(BaseModel):
    device_id: str
    device_name: str
    points: list[TelemetryPointOut]
    summary: TelemetryPointOut | None


class TelemetryQueryOut(BaseModel):
    metric: str
    since: datetime
    until: datetime
    step_s: int
    quantile: float | None
    series: list[TelemetrySeriesOut]
    summary: TelemetryPointOut | None = Field(description="Every matching window merged.")


class TelemetryPolicyOut(BaseModel):
    manifest: dict[str, Any] = Field(description="The fleet telemetry policy in force")
    version: int = Field(description="0 while the built-in default applies.")
    updated_by: str | None
    updated_at: datetime | None


class TelemetryPolicyIn(Strict):
    manifest: dict[str, Any] = Field(description="The fleet telemetry policy (see docs).")


class KpiReadingOut(BaseModel):
    value: float
    samples: int


class KpiSummaryOut(BaseModel):
    metric: str
    since: datetime
    until: datetime
    quantile: float
    devices: dict[str, TelemetryPointOut]
    cohorts: dict[str, TelemetryPointOut]
    overall: TelemetryPointOut | None
    kpis: dict[str, dict[str, KpiReadingOut]]


class SealingIn(Strict):
    enabled: bool = Field(description="Devices seal their telemetry batches to the ingest key")
    rotate: bool = Field(False, description="Make a new ingest key (the last 3 still open)")


class SealingOut(BaseModel):
    enabled: bool
    key_id: str | None = Field(description="Hex id of the current ingest key")
    public_key: str | None = Field(description="The current X25519 ingest key (base64)")
    version: int
