"""Telemetry service: exactly-once ingest, queries, KPI summaries, the fleet policy, and
retention (hourly rollups, pruning).

Ingest is one transaction per batch: decode and validate everything first (nothing is
written from a bad batch), then check the device's cursor (core.telemetry_ingest), move the
windows onto the server's clock (core.telemetry_clock: a device's wrong clock is undone, and
no window is stored in the future), store them, advance the cursor, feed the KPI detectors
and open or close alerts. A refused batch raises from the error tree with a precise code:
`corrupt_batch`, `bad_batch_schema`, `unsupported_batch_version` (400), `batch_too_large`
(413), `duplicate_batch` and `sequence_gap` (409), `bad_dropped_through` (400).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from edgefleet.clock import Clock
from edgefleet.core.device import Device
from edgefleet.core.selector import parse_selector
from edgefleet.core.telemetry.clock import MIN_SKEW_S, place_batch, record_placement
from edgefleet.core.telemetry.ingest import (
    IngestCursor,
    IngestVerdict,
    advance_cursor,
    decide_ingest,
)
from edgefleet.core.telemetry.kpi import (
    KpiReading,
    KpiSpec,
    MetricWindow,
    Statistic,
    cohort_key,
    kpi_reading,
)
from edgefleet.core.telemetry.policy import fleet_policy_to_document, parse_fleet_policy
from edgefleet.core.telemetry.rollup import combine, hour_of, roll_up
from edgefleet.core.telemetry.series import (
    DeviceWindow,
    SeriesPoint,
    choose_step_s,
    series_points,
    summarize,
)
from edgefleet.core.telemetry.windows import Window
from edgefleet.core.telemetry.wire import Batch, decode_batch
from edgefleet.errors import Conflict, EdgefleetError, InvalidInput, NotFound, StoreError
from edgefleet.security.rbac import Permission
from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.services.alerts import detect_on_ingest
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.desired import FleetInputs, save_device
from edgefleet.server.services.fidelity import update_advice
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database, Transaction

log = logging.getLogger(__name__)

ROLLUP_DEVICES_PER_RUN = 200
ROLLUP_CHUNK_S = 24 * 3600
MAX_QUERY_RANGE_S = 400 * 86400


@dataclass(frozen=True)
class IngestResult:
    acked_through_seq: int
    stored_windows: int


@dataclass(frozen=True)
class StoredBatch:
    """A batch written in a transaction, and what to do once that committed."""

    device: Device
    result: IngestResult
    windows: Sequence[Window]
    alerts_changed: bool


@dataclass(frozen=True)
class DeviceSeries:
    device_id: str
    device_name: str
    points: list[SeriesPoint]
    summary: SeriesPoint | None


@dataclass(frozen=True)
class QueryResult:
    metric: str
    since: datetime
    until: datetime
    step_s: int
    quantile: float | None
    series: list[DeviceSeries]
    summary: SeriesPoint | None


@dataclass(frozen=True)
class KpiSummary:
    """A metric over a period, per device, per cohort and over all given devices, plus each
    policy KPI's reading (what rollout gates compare before and after an update)."""

    metric: str
    since: datetime
    until: datetime
    quantile: float
    devices: dict[str, SeriesPoint]
    cohorts: dict[str, SeriesPoint]
    overall: SeriesPoint | None
    kpis: dict[str, dict[str, KpiReading]]  # device id -> KPI name -> reading


@dataclass(frozen=True)
class PolicyRecord:
    document: dict[str, Any]
    version: int
    updated_by: str | None
    updated_at: datetime | None


class TelemetryService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        watch: DesiredStateWatch,
        metrics: ServerMetrics,
        settings: ServerSettings,
    ) -> None:
        self._db = db
        self._clock = clock
        self._watch = watch
        self._metrics = metrics
        self._settings = settings
        self._on_stored: Callable[[Device, Sequence[Window]], None] | None = None

    def on_stored(self, callback: Callable[[Device, Sequence[Window]], None]) -> None:
        """Hand each stored batch's windows (on the server's clock) to `callback` after its
        transaction (the OTLP exporter's queue, which never blocks)."""
        self._on_stored = callback

    def now(self) -> datetime:
        return self._clock.now()

    # Device side.

    def ingest(
        self, device: Device, body: bytes, dropped_through_seq: int, signed_at_s: int
    ) -> IngestResult:
        """Store one batch exactly once (see the module docstring for refusals), its windows
        moved onto the server's clock (`signed_at_s`: the request's signed timestamp), in a
        transaction of its own (services/ingest.py stores many in one)."""
        batch = self.decode(body)
        try:
            with self._db.transaction() as tx:
                done = self.store_batch(tx, device, batch, dropped_through_seq, signed_at_s,
                                        self._clock.now())  # fmt: skip
        except StoreError as e:  # a refusal of the batch itself is counted where it is made
            self._metrics.batches_refused.inc(e.code)
            raise
        self.after_stored(done)
        return done.result

    def decode(self, body: bytes) -> Batch:
        """A batch's wire bytes decoded and checked (before any transaction)."""
        self._metrics.batch_bytes.inc(amount=len(body))
        try:
            return decode_batch(body)
        except EdgefleetError as e:
            self._metrics.batches_refused.inc(e.code)
            raise

    def after_stored(self, done: StoredBatch) -> None:
        """What follows a stored batch once its transaction committed."""
        if self._on_stored is not None:
            self._on_stored(done.device, done.windows)
        self._metrics.batches_accepted.inc()
        self._metrics.windows_accepted.inc(amount=done.result.stored_windows)
        if done.alerts_changed:
            self._watch.notify(done.device.id)

    def store_batch(
        self,
        tx: Transaction,
        device: Device,
        batch: Batch,
        dropped_through_seq: int,
        signed_at_s: int,
        now: datetime,
    ) -> StoredBatch:
        """Store `batch` in `tx`; `after_stored` once it committed. Raises (and counts) a
        refusal: nothing of the batch is then written."""
        try:
            return self._store(tx, device, batch, dropped_through_seq, signed_at_s, now)
        except EdgefleetError as e:
            self._metrics.batches_refused.inc(e.code)
            raise

    def _store(
        self,
        tx: Transaction,
        device: Device,
        batch: Batch,
        dropped_through_seq: int,
        signed_at_s: int,
        now: datetime,
    ) -> StoredBatch:
        cursor = tx.telemetry.cursor(device.id)
        decision = decide_ingest(cursor or IngestCursor(), batch.seq, dropped_through_seq)
        if decision.verdict is IngestVerdict.BAD_DECLARATION:
            raise InvalidInput(decision.reason, code="bad_dropped_through")
        if decision.verdict is IngestVerdict.DUPLICATE:
            raise Conflict(decision.reason, code="duplicate_batch")
        if decision.verdict is IngestVerdict.GAP:
            raise Conflict(decision.reason, code="sequence_gap")
        seen = cursor or IngestCursor()
        placement = place_batch(
            max((w.end_s for w in batch.windows), default=None), signed_at_s, now,
            seen.clock.newest_end_s,
        )  # fmt: skip
        windows: Sequence[Window] = batch.windows
        if placement.shift_s:
            windows = [replace(w, start_s=w.start_s + placement.shift_s) for w in windows]
        advanced = advance_cursor(
            seen, batch.seq, len(windows),
            batch.dropped_batches_total, batch.dropped_windows_total, now,
        )  # fmt: skip
        clock = record_placement(seen.clock, placement, len(windows))
        tx.telemetry.save_cursor(device.id, cursor, replace(advanced, clock=clock))
        tx.telemetry.insert_windows(device.id, batch.seq, windows)
        fleet_policy = tx.telemetry.fleet_policy()
        changed = detect_on_ingest(
            tx, device.id, windows, fleet_policy.detection, self._metrics, now
        )
        changed |= update_advice(tx, device.id, windows, fleet_policy.fidelity, now)
        if changed:
            save_device(tx, tx.devices.get(device.id))
        if dropped_through_seq > (cursor.acked_through_seq if cursor else 0):
            log.info("telemetry gap stepped over", extra={
                "device_id": device.id, "seq": batch.seq,
                "dropped_through_seq": dropped_through_seq,
                "dropped_batches_total": batch.dropped_batches_total})  # fmt: skip
        if placement.shift_s and windows:
            # A second or so is a window cut short and rounded up, not a wrong clock.
            level = logging.WARNING if abs(placement.shift_s) >= MIN_SKEW_S else logging.INFO
            log.log(level, "telemetry windows moved onto server time", extra={
                "device_id": device.id, "seq": batch.seq, "shift_s": placement.shift_s,
                "skew_s": placement.skew_s, "windows": len(windows),
                "corrections": ",".join(placement.corrections),
                "reason": placement.reason})  # fmt: skip
        result = IngestResult(decision.acked_through_seq, len(batch.windows))
        return StoredBatch(device, result, windows, changed)

    def cursor(self, device_id: str) -> IngestCursor:
        with self._db.read() as tx:
            return tx.telemetry.cursor(device_id) or IngestCursor()

    # Operators.

    def status(self, ctx: OperatorContext, id_or_name: str) -> tuple[Device, IngestCursor]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            device = tx.devices.resolve(id_or_name)
            return device, tx.telemetry.cursor(device.id) or IngestCursor()

    def _devices(self, tx: Transaction, device: str | None, selector: str | None) -> list[Device]:
        if (device is None) == (selector is None):
            raise InvalidInput("give exactly one of device and selector", code="bad_query")
        if device is not None:
            return [tx.devices.resolve(device)]
        parsed = parse_selector(selector or "")
        return [d for d in tx.devices.all() if parsed.matches(d.labels)]

    def _check_range(self, since: datetime, until: datetime) -> None:
        span_s = (until - since).total_seconds()
        if span_s <= 0:
            raise InvalidInput("since must be before until", code="bad_query")
        if span_s > MAX_QUERY_RANGE_S:
            raise InvalidInput(
                f"a query may span at most {MAX_QUERY_RANGE_S // 86400} days", code="bad_query"
            )

    def _read_windows(
        self, tx: Transaction, device_ids: Sequence[str], names: Sequence[str],
        since: datetime, until: datetime,
    ) -> list[DeviceWindow]:  # fmt: skip
        windows = tx.telemetry.windows(
            device_ids, names, int(since.timestamp()), int(until.timestamp())
        )
        if len(windows) > self._settings.telemetry_max_query_windows:
            raise InvalidInput(
                f"the query reads {len(windows)} windows, more than the limit of "
                f"{self._settings.telemetry_max_query_windows}: narrow the time range or "
                "the devices",
                code="query_too_large",
            )
        return windows

    def query(
        self,
        ctx: OperatorContext,
        metric: str,
        since: datetime,
        until: datetime,
        *,
        device: str | None = None,
        selector: str | None = None,
        quantile: float | None = None,
        step_s: int | None = None,
    ) -> QueryResult:
        """A metric's series per device, bucketed by `step_s`, and its summary."""
        ctx.require(Permission.FLEET_READ)
        self._check_range(since, until)
        if quantile is not None and not 0.0 <= quantile <= 1.0:
            raise InvalidInput("quantile must be in [0, 1]", code="bad_query")
        with self._db.read() as tx:
            devices = self._devices(tx, device, selector)
            windows = self._read_windows(tx, [d.id for d in devices], [metric], since, until)
            if not windows:
                check_metric_known(metric, tx.telemetry.stored_metric_names(
                    [d.id for d in devices]))  # fmt: skip
        step = choose_step_s((until - since).total_seconds(), step_s)
        by_device: dict[str, list[Window]] = {}
        for dw in windows:
            by_device.setdefault(dw.device_id, []).append(dw.window)
        series = [
            DeviceSeries(
                d.id,
                d.name,
                series_points(by_device.get(d.id, []), step, quantile),
                summarize(by_device.get(d.id, []), quantile),
            )
            for d in devices
        ]
        overall = summarize((dw.window for dw in windows), quantile)
        return QueryResult(metric, since, until, step, quantile, series, overall)

    def metric_names(self, ctx: OperatorContext, device: str, since: datetime) -> list[str]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            found = tx.devices.resolve(device)
            return tx.telemetry.metric_names([found.id], int(since.timestamp()))

    def kpi_summary(
        self,
        device_ids: Sequence[str],
        metric: str,
        since: datetime,
        until: datetime,
        quantile: float = 0.95,
    ) -> KpiSummary:
        """`metric` over [since, until) per device, per cohort and overall, and every policy
        KPI per device. For the control plane's own use (rollout gates); no permission."""
        self._check_range(since, until)
        with self._db.read() as tx:
            devices = [tx.devices.get(d) for d in device_ids]
            detection = tx.telemetry.fleet_policy().detection
            names = sorted({metric, *(m for k in detection.kpis for m in k.metrics)})
            windows = self._read_windows(tx, list(device_ids), names, since, until)
        per_device: dict[str, dict[str, list[Window]]] = {}
        for dw in windows:
            per_device.setdefault(dw.device_id, {}).setdefault(dw.window.name, []).append(dw.window)
        cohort_of = {d.id: cohort_key(d) for d in devices}
        device_points: dict[str, SeriesPoint] = {}
        cohort_windows: dict[str, list[Window]] = {}
        for device_id, by_name in per_device.items():
            point = summarize(by_name.get(metric, []), quantile)
            if point is not None:
                device_points[device_id] = point
            cohort_windows.setdefault(cohort_of[device_id], []).extend(by_name.get(metric, []))
        cohorts = {
            key: point for key, ws in cohort_windows.items()
            if (point := summarize(ws, quantile)) is not None
        }  # fmt: skip
        overall = summarize((dw.window for dw in windows if dw.window.name == metric), quantile)
        kpis = {
            device_id: _readings(detection.kpis, by_name)
            for device_id, by_name in per_device.items()
        }
        return KpiSummary(metric, since, until, quantile, device_points, cohorts, overall, kpis)

    # The fleet policy.

    def policy(self, ctx: OperatorContext) -> PolicyRecord:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            record = tx.telemetry.policy_record()
            if record is None:
                document = fleet_policy_to_document(tx.telemetry.fleet_policy())
                return PolicyRecord(document, 0, None, None)
        return PolicyRecord(
            record["document"], record["version"], record["updated_by"], record["updated_at"]
        )

    def set_policy(self, ctx: OperatorContext, document: Mapping[str, Any]) -> PolicyRecord:
        """Validate and store the fleet policy; every device's desired state follows."""
        ctx.require(Permission.TELEMETRY_WRITE)
        canonical = fleet_policy_to_document(parse_fleet_policy(document))
        now = self._clock.now()
        changed: list[str] = []
        with self._db.transaction() as tx:
            record = tx.telemetry.policy_record()
            version = tx.telemetry.save_policy(
                canonical, record["version"] if record else 0, ctx.actor, now
            )
            fleet = FleetInputs(tx)
            for device in tx.devices.all():
                saved = save_device(tx, device, fleet)
                if saved.desired_generation != device.desired_generation:
                    changed.append(device.id)
            record_action(
                tx, ctx, "telemetry.policy.set", "telemetry-policy/fleet", now,
                {"version": version, "devices_changed": len(changed),
                 "active_sets": canonical["active_sets"]},
            )  # fmt: skip
        for device_id in changed:
            self._watch.notify(device_id)
        return PolicyRecord(canonical, version, ctx.actor, now)

    # Retention.

    def roll_up_and_prune(self) -> dict[str, int]:
        """Roll raw windows past the raw retention into hourly rollups (one device and day
        per transaction), then drop rollups and closed alerts past theirs."""
        now = self._clock.now()
        settings = self._settings
        cutoff_s = int(now.timestamp() - settings.telemetry_raw_retention_days * 86400)
        rolled = windows = 0
        with self._db.read() as tx:
            device_ids = tx.telemetry.devices_with_windows_before(cutoff_s, ROLLUP_DEVICES_PER_RUN)
        for device_id in device_ids:
            try:
                with self._db.transaction() as tx:
                    oldest = tx.telemetry.oldest_start_s(device_id)
                    if oldest is None or oldest >= cutoff_s:
                        continue
                    upto_s = min(cutoff_s, hour_of(oldest) + ROLLUP_CHUNK_S)
                    taken = tx.telemetry.take_windows_before(device_id, upto_s)
                    for window in roll_up(taken).values():
                        existing = tx.telemetry.rollup(device_id, window)
                        merged = window if existing is None else combine([existing, window])
                        tx.telemetry.put_rollup(
                            device_id, merged, replace_existing=existing is not None
                        )
                        rolled += 1
                    windows += len(taken)
            except EdgefleetError as e:
                log.warning(
                    "telemetry rollup failed; next run retries",
                    extra={"device_id": device_id, "error": e.message},
                )
        rollup_cutoff_s = int(now.timestamp() - settings.telemetry_rollup_retention_days * 86400)
        with self._db.transaction() as tx:
            pruned = tx.telemetry.prune_rollups(rollup_cutoff_s)
            alerts = tx.alerts.prune_closed(now - timedelta(days=settings.alert_history_days))
        return {
            "windows_rolled_up": windows,
            "rollups_written": rolled,
            "rollups_pruned": pruned,
            "alerts_pruned": alerts,
        }


def _readings(
    specs: Sequence[KpiSpec], by_name: Mapping[str, list[Window]]
) -> dict[str, KpiReading]:
    """Each KPI over a whole period, from the period's windows of every metric."""
    out: dict[str, KpiReading] = {}
    for spec in specs:
        period: dict[str, MetricWindow] = {}
        for name in spec.metrics:
            point = summarize(
                by_name.get(name, []),
                spec.quantile if spec.statistic is Statistic.QUANTILE else None,
            )
            if point is None:
                continue
            quantiles = {spec.quantile: point.quantile} if point.quantile is not None else {}
            period[name] = MetricWindow(
                point.start_s, point.length_s, point.count, point.sum, point.min, point.max,
                quantiles,
            )  # fmt: skip
        reading = kpi_reading(spec, period)
        if reading is not None:
            out[spec.name] = reading
    return out


def check_metric_known(metric: str, known: set[str]) -> None:
    """Raise NotFound (`unknown_metric`) naming the closest stored names when the devices
    have stored telemetry but never `metric` (a typo would otherwise answer zero points).

    >>> check_metric_known("host.cpu_percent", {"host.cpu.percent", "inference.latency_ms"})
    Traceback (most recent call last):
    ...
    edgefleet.errors.NotFound: unknown metric 'host.cpu_percent': did you mean host.cpu.percent?
    """
    if not known or metric in known:
        return
    close = difflib.get_close_matches(metric, sorted(known), n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(close)}?" if close
            else f"these devices report {', '.join(sorted(known)[:10])}"
            + (", ..." if len(known) > 10 else ""))  # fmt: skip
    raise NotFound(f"unknown metric {metric!r}: {hint}", code="unknown_metric")
