"""Telemetry API: batch upload and cursor for devices; queries, KPI summaries, ingest status
and the fleet policy for operators."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from edgefleet.core.device import Device
from edgefleet.core.durations import parse_duration
from edgefleet.core.protocol import TelemetryAck, TelemetryBatchHeader
from edgefleet.core.telemetry.ingest import IngestCursor
from edgefleet.core.telemetry.series import SeriesPoint
from edgefleet.errors import InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.security.request_signing import read_signed_headers
from edgefleet.server.auth import requires, signed_device
from edgefleet.server.composition import Services, services
from edgefleet.server.routes.device_api import answer_body, device_ingest, ingested
from edgefleet.server.schemas.base import SQL_INTEGER_MAX
from edgefleet.server.schemas.telemetry import (
    KpiReadingOut,
    KpiSummaryOut,
    SealingIn,
    SealingOut,
    TelemetryCursorOut,
    TelemetryPointOut,
    TelemetryPolicyIn,
    TelemetryPolicyOut,
    TelemetryQueryOut,
    TelemetrySeriesOut,
)
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.ingest import DeviceIngest, TelemetryUpload
from edgefleet.server.services.sealing import SealingStatus, check_sealed_media
from edgefleet.server.services.telemetry import PolicyRecord

CONTENT_TYPE = "application/x-edgefleet-telemetry"
# A batch sealed to the control plane's ingest key (security/sealing.py).
SEALED_CONTENT_TYPE = "application/x-edgefleet-telemetry-sealed"

device_router = APIRouter(prefix="/v1/devices", tags=["device API"])
router = APIRouter(prefix="/v1/telemetry", tags=["telemetry"])


@device_router.post(
    "/{device_id}/telemetry",
    summary="Upload one telemetry batch (binary wire format), stored exactly once by sequence",
    responses=answer_body(TelemetryAck),
    response_class=JSONResponse,
)
async def upload(
    request: Request,
    device_id: str,
    dropped_through_seq: int = Query(
        0,
        ge=0,
        le=SQL_INTEGER_MAX,
        description="Every batch up to here the server lacks is gone on the device",
    ),
    device: Device = Depends(signed_device),
    svc: Services = Depends(services),
    ingest: DeviceIngest = Depends(device_ingest),
) -> Response:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    sealed = check_sealed_media(media, SEALED_CONTENT_TYPE, CONTENT_TYPE)
    body = await request.body()
    if sealed:
        body = await run_in_threadpool(svc.sealing.unseal, device.id, body)
    # Authentication has checked the signed timestamp; it shows the device's clock.
    signed_at_s = read_signed_headers(request.headers).timestamp
    header = TelemetryBatchHeader(dropped_through_seq=dropped_through_seq, sealed=sealed)
    return await ingested(request, ingest, TelemetryUpload(header, body, signed_at_s), device)


def _cursor_out(device_id: str, cursor: IngestCursor) -> TelemetryCursorOut:
    return TelemetryCursorOut(
        device_id=device_id,
        acked_through_seq=cursor.acked_through_seq,
        batches_stored=cursor.batches_stored,
        windows_stored=cursor.windows_stored,
        dropped_batches_total=cursor.dropped_batches_total,
        dropped_windows_total=cursor.dropped_windows_total,
        last_batch_at=cursor.last_batch_at,
        clock_skew_s=cursor.clock.skew_s,
        shifted_batches=cursor.clock.shifted_batches,
        shifted_windows=cursor.clock.shifted_windows,
        last_shift_s=cursor.clock.last_shift_s,
        largest_shift_s=cursor.clock.largest_shift_s,
        last_shift_reason=cursor.clock.last_reason,
    )


@device_router.get(
    "/{device_id}/telemetry",
    summary="The device's telemetry cursor: where to resume uploading",
    response_model=TelemetryCursorOut,
)
async def device_cursor(
    device_id: str, device: Device = Depends(signed_device), svc: Services = Depends(services)
) -> TelemetryCursorOut:
    cursor = await run_in_threadpool(svc.telemetry.cursor, device.id)
    return _cursor_out(device.id, cursor)


def parse_time(text: str | None, now: datetime, default: datetime) -> datetime:
    """`1h` (that long ago), `now`, or an ISO 8601 time (UTC if no offset is given)."""
    if text is None or not text.strip():
        return default
    text = text.strip()
    if text == "now":
        return now
    try:
        return now - parse_duration(text)
    except InvalidInput:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"invalid time {text!r}: expected a duration ago (1h, 30m) or an ISO 8601 time",
            code="bad_query",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def point_out(point: SeriesPoint | None) -> TelemetryPointOut | None:
    if point is None:
        return None
    return TelemetryPointOut(
        time=datetime.fromtimestamp(point.start_s, UTC),
        start_s=point.start_s,
        length_s=point.length_s,
        count=point.count,
        sum=point.sum,
        mean=point.mean,
        min=point.min,
        max=point.max,
        last=point.last,
        quantile=point.quantile,
        windows=point.windows,
    )


@router.get("/query", summary="A metric's series per device", response_model=TelemetryQueryOut)
def query(
    metric: str = Query(..., min_length=1, max_length=200, description="e.g. host.cpu.percent"),
    device: str | None = Query(None, description="A device id or name"),
    selector: str | None = Query(None, max_length=4096, description="Or a label selector"),
    since: str = Query("1h", description="A duration ago (1h) or an ISO 8601 time"),
    until: str | None = Query(None, description="Default now"),
    quantile: float | None = Query(None, ge=0, le=1, description="e.g. 0.95 (timings)"),
    step: str | None = Query(None, description="Bucket length, e.g. 60 or 5m [automatic]"),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> TelemetryQueryOut:
    now = svc.telemetry.now()
    step_s = None if step is None else int(parse_duration(step).total_seconds())
    result = svc.telemetry.query(
        ctx,
        metric,
        parse_time(since, now, now),
        parse_time(until, now, now),
        device=device,
        selector=selector,
        quantile=quantile,
        step_s=step_s,
    )
    return TelemetryQueryOut(
        metric=result.metric,
        since=result.since,
        until=result.until,
        step_s=result.step_s,
        quantile=result.quantile,
        series=[
            TelemetrySeriesOut(
                device_id=s.device_id,
                device_name=s.device_name,
                points=[p for p in map(point_out, s.points) if p is not None],
                summary=point_out(s.summary),
            )
            for s in result.series
        ],
        summary=point_out(result.summary),
    )


@router.get(
    "/kpis",
    summary="A metric and every policy KPI over a period, per device and per cohort",
    response_model=KpiSummaryOut,
)
def kpis(
    metric: str = Query("inference.latency_ms", min_length=1, max_length=200),
    device: str | None = Query(None),
    selector: str | None = Query(None, max_length=4096),
    since: str = Query("1h"),
    until: str | None = Query(None),
    quantile: float = Query(0.95, ge=0, le=1),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> KpiSummaryOut:
    devices = (
        svc.devices.list_devices(ctx, selector)
        if device is None
        else [svc.devices.get(ctx, device)]
    )
    now = svc.telemetry.now()
    summary = svc.telemetry.kpi_summary(
        [d.id for d in devices], metric, parse_time(since, now, now), parse_time(until, now, now),
        quantile,
    )  # fmt: skip
    return KpiSummaryOut(
        metric=summary.metric,
        since=summary.since,
        until=summary.until,
        quantile=summary.quantile,
        devices={k: p for k, v in summary.devices.items() if (p := point_out(v)) is not None},
        cohorts={k: p for k, v in summary.cohorts.items() if (p := point_out(v)) is not None},
        overall=point_out(summary.overall),
        kpis={
            d: {k: KpiReadingOut(value=r.value, samples=r.samples) for k, r in readings.items()}
            for d, readings in summary.kpis.items()
        },
    )


@router.get(
    "/devices/{device}",
    summary="Ingest status of one device: cursor, stored counts, reported drops, its clock",
    response_model=TelemetryCursorOut,
)
def status(
    device: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> TelemetryCursorOut:
    found, cursor = svc.telemetry.status(ctx, device)
    return _cursor_out(found.id, cursor)


@router.get("/devices/{device}/metrics", summary="Metric names a device has reported")
def metric_names(
    device: str,
    since: str = Query("24h"),
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[str]:
    now = svc.telemetry.now()
    return svc.telemetry.metric_names(ctx, device, parse_time(since, now, now))


def _policy_out(record: PolicyRecord) -> TelemetryPolicyOut:
    return TelemetryPolicyOut(
        manifest=record.document,
        version=record.version,
        updated_by=record.updated_by,
        updated_at=record.updated_at,
    )


@router.get("/policy", summary="The fleet telemetry policy", response_model=TelemetryPolicyOut)
def get_policy(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> TelemetryPolicyOut:
    return _policy_out(svc.telemetry.policy(ctx))


@router.put(
    "/policy",
    summary="Replace the fleet telemetry policy; every device's desired state follows",
    response_model=TelemetryPolicyOut,
)
def put_policy(
    body: TelemetryPolicyIn,
    ctx: OperatorContext = Depends(requires(Permission.TELEMETRY_WRITE)),
    svc: Services = Depends(services),
) -> TelemetryPolicyOut:
    return _policy_out(svc.telemetry.set_policy(ctx, body.manifest))


@router.get("/sealing", summary="Sealed telemetry: whether it is on, the ingest public key",
            response_model=SealingOut)  # fmt: skip
def get_sealing(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> SealingOut:
    return _sealing_out(svc.sealing.status(ctx))


@router.put("/sealing", summary="Turn sealed telemetry on or off, or rotate the ingest key; "
            "every device's desired state follows", response_model=SealingOut)  # fmt: skip
def put_sealing(
    body: SealingIn,
    ctx: OperatorContext = Depends(requires(Permission.TELEMETRY_WRITE)),
    svc: Services = Depends(services),
) -> SealingOut:
    return _sealing_out(svc.sealing.configure(ctx, body.enabled, body.rotate))


def _sealing_out(status: SealingStatus) -> SealingOut:
    return SealingOut(enabled=status.enabled, key_id=status.key_id,
                      public_key=status.public_key, version=status.version)  # fmt: skip
