"""Read-only aggregate queries for the web dashboard: counts done by the database, and narrow
pages of devices, so that a fleet of 10,000 devices costs a few indexed scans per view
instead of decoding every device's inventory and desired state.

Connection status depends on each device's heartbeat interval (`core/device.py`), so the
caller passes one `StatusCutoffs` per distinct interval and the queries compare `last_seen`
against those instants. On the MQTT channel the interval is the longer one an online device
hosting nothing is told (`_status_interval`), and a Will taken after the last heartbeat is
offline at once (`_gone`), as `core.device.classify_connection` has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    func,
    literal,
    or_,
    select,
)

from edgefleet.store.tables import (
    alerts,
    audit_log,
    devices,
    node_health,
    rollout_devices,
    rollout_events,
    rollouts,
)

APPROVED = "approved"


@dataclass(frozen=True)
class StatusCutoffs:
    """For devices with this heartbeat interval: online when seen at or after
    `online_since`, stale when at or after `offline_before`, offline otherwise."""

    heartbeat_interval_s: float
    online_since: datetime
    offline_before: datetime


@dataclass(frozen=True)
class DeviceRow:
    id: str
    name: str
    enrollment: str
    labels: dict[str, str]
    region: str
    site: str
    last_seen: datetime | None
    heartbeat_interval_s: float  # what its status is judged against
    release: str | None
    release_state: str | None
    gone: bool = False  # its Will came after its last heartbeat


def _region() -> ColumnElement[Any]:
    return func.coalesce(devices.c.inventory[("location", "region")].as_string(),
                         devices.c.labels["region"].as_string(), literal("default"))  # fmt: skip


def _site() -> ColumnElement[Any]:
    return func.coalesce(devices.c.inventory[("location", "zone")].as_string(),
                         devices.c.labels["zone"].as_string(),
                         devices.c.labels["site"].as_string(), _region())  # fmt: skip


def _release() -> ColumnElement[Any]:
    name = devices.c.release_status[("active", "name")].as_string()
    version = devices.c.release_status[("active", "version")].as_string()
    return case((name.is_(None), None), else_=name + literal("@") + version)


def _status_interval() -> ColumnElement[Any]:
    """The interval a device's status is judged against: its own, or the longer one it is
    told while online on the MQTT channel and hosting nothing."""
    longer = and_(devices.c.presence == "online",
                  devices.c.presence_interval_s > devices.c.heartbeat_interval_s)  # fmt: skip
    return case((longer, devices.c.presence_interval_s), else_=devices.c.heartbeat_interval_s)


def _gone() -> ColumnElement[bool]:
    """The device's Will (presence offline) was taken at or after its last heartbeat.
    False, never NULL, for a device without presence (HTTP): its negation must hold."""
    return and_(devices.c.presence.is_not(None), devices.c.presence_at.is_not(None),
                devices.c.last_seen.is_not(None), devices.c.presence == "offline",
                devices.c.presence_at >= devices.c.last_seen)  # fmt: skip


def _status_condition(status: str, cutoffs: Sequence[StatusCutoffs]) -> ColumnElement[bool]:
    """Approved devices in `status` (online, stale or offline)."""
    seen = devices.c.last_seen
    interval = _status_interval()
    per_interval = []
    for c in cutoffs:
        if status == "online":
            cond = seen >= c.online_since
        elif status == "stale":
            cond = and_(seen < c.online_since, seen >= c.offline_before)
        else:
            cond = or_(seen.is_(None), seen < c.offline_before)
        per_interval.append(and_(interval == c.heartbeat_interval_s, cond))
    matched = or_(*per_interval) if per_interval else literal(False)
    matched = or_(_gone(), matched) if status == "offline" else and_(~_gone(), matched)
    return and_(devices.c.enrollment == APPROVED, matched)


class DashboardRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def heartbeat_intervals(self) -> list[float]:
        """The distinct heartbeat intervals approved devices' status is judged against (a
        handful in practice)."""
        query = select(_status_interval()).where(devices.c.enrollment == APPROVED)
        return [float(r[0]) for r in self._c.execute(query.distinct())]

    def enrollment_counts(self) -> dict[str, int]:
        query = select(devices.c.enrollment, func.count()).group_by(devices.c.enrollment)
        return {row[0]: int(row[1]) for row in self._c.execute(query)}

    def status_counts(self, cutoffs: Sequence[StatusCutoffs]) -> dict[str, int]:
        """Approved devices per connection status, counted by the database."""
        columns = [
            func.coalesce(func.sum(case((_status_condition(s, cutoffs), 1), else_=0)), 0)
            for s in ("online", "stale", "offline")
        ]
        row = self._c.execute(select(*columns).where(devices.c.enrollment == APPROVED)).one()
        return {"online": int(row[0]), "stale": int(row[1]), "offline": int(row[2])}

    def counts_by_location(self, cutoffs: Sequence[StatusCutoffs]) -> list[dict[str, Any]]:
        """Approved devices per (region, site), with how many are online."""
        region, site = _region().label("region"), _site().label("site")
        online = func.sum(case((_status_condition("online", cutoffs), 1), else_=0))
        query = (select(region, site, func.count().label("devices"), online.label("online"))
                 .where(devices.c.enrollment == APPROVED)
                 .group_by(region, site).order_by(region, site))  # fmt: skip
        return [{"region": r.region, "site": r.site, "devices": int(r.devices),
                 "online": int(r.online or 0)} for r in self._c.execute(query)]  # fmt: skip

    def counts_by_release(self) -> list[dict[str, Any]]:
        """Approved devices per release they run (None: none), most devices first."""
        release = _release().label("release")
        query = (select(release, func.count().label("devices"))
                 .where(devices.c.enrollment == APPROVED)
                 .group_by(release).order_by(func.count().desc()))  # fmt: skip
        return [{"release": r.release, "devices": int(r.devices)} for r in self._c.execute(query)]

    def device_page(
        self,
        cutoffs: Sequence[StatusCutoffs],
        *,
        status: str | None,
        enrollment: str | None,
        search: str | None,
        offset: int,
        limit: int,
    ) -> tuple[int, list[DeviceRow]]:
        """One page of devices (name order) and how many match in all."""
        conditions: list[ColumnElement[bool]] = []
        if status is not None:
            conditions.append(_status_condition(status, cutoffs))
        if enrollment is not None:
            conditions.append(devices.c.enrollment == enrollment)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            conditions.append(or_(devices.c.name.like(pattern, escape="\\"),
                                  devices.c.id.like(pattern, escape="\\")))  # fmt: skip
        where = and_(literal(True), *conditions)
        total = int(self._c.execute(select(func.count()).select_from(devices).where(where))
                    .scalar_one())  # fmt: skip
        query = (select(devices.c.id, devices.c.name, devices.c.enrollment, devices.c.labels,
                        _region().label("region"), _site().label("site"), devices.c.last_seen,
                        _status_interval().label("heartbeat_interval_s"),
                        _release().label("release"),
                        devices.c.release_status[("state",)].as_string().label("release_state"),
                        _gone().label("gone"))
                 .where(where).order_by(devices.c.name, devices.c.id)
                 .offset(offset).limit(limit))  # fmt: skip
        rows = [DeviceRow(id=r.id, name=r.name, enrollment=r.enrollment, labels=dict(r.labels),
                          region=r.region, site=r.site, last_seen=r.last_seen,
                          heartbeat_interval_s=float(r.heartbeat_interval_s), release=r.release,
                          release_state=r.release_state, gone=bool(r.gone))
                for r in self._c.execute(query)]  # fmt: skip
        return total, rows

    def open_alerts(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """How many alerts are open, and the newest `limit` with their device's name."""
        is_open = alerts.c.status == "open"
        total = int(self._c.execute(select(func.count()).select_from(alerts).where(is_open))
                    .scalar_one())  # fmt: skip
        query = (select(alerts.c.id, alerts.c.device_id, devices.c.name.label("device_name"),
                        alerts.c.kind, alerts.c.kpi, alerts.c.opened_at, alerts.c.open_reason)
                 .select_from(alerts.outerjoin(devices, devices.c.id == alerts.c.device_id))
                 .where(is_open).order_by(alerts.c.opened_at.desc()).limit(limit))  # fmt: skip
        return total, [dict(r._mapping) for r in self._c.execute(query)]

    def rollouts_in_trouble(self, states: Sequence[str], since: datetime) -> list[dict[str, Any]]:
        """Rollouts in one of `states` last changed at or after `since`, newest first."""
        query = (select(rollouts.c.id, rollouts.c.name, rollouts.c.release, rollouts.c.state,
                        rollouts.c.reason, rollouts.c.updated_at)
                 .where(rollouts.c.state.in_(list(states)), rollouts.c.updated_at >= since)
                 .order_by(rollouts.c.updated_at.desc()).limit(20))  # fmt: skip
        return [dict(r._mapping) for r in self._c.execute(query)]

    def rollout_states(self, since: datetime, active: Sequence[str]) -> dict[str, tuple[str, int]]:
        """(state, version) of every active rollout and of those changed since `since`."""
        query = select(rollouts.c.id, rollouts.c.state, rollouts.c.version).where(
            or_(rollouts.c.state.in_(list(active)), rollouts.c.updated_at >= since)
        )
        return {r.id: (r.state, int(r.version)) for r in self._c.execute(query)}

    def nodes_near_limits(
        self, battery_pct_max: float, cpu_load_min: float, limit: int
    ) -> list[dict[str, Any]]:
        """Nodes draining, low on battery or loaded near their capacity."""
        battery = node_health.c.node["battery_pct"].as_float()
        load = node_health.c.node["cpu_load"].as_float()
        draining = node_health.c.drain["draining"].as_boolean()
        query = (select(node_health.c.device_id, devices.c.name, battery.label("battery_pct"),
                        load.label("cpu_load"), draining.label("draining"),
                        node_health.c.drain["reason"].as_string().label("drain_reason"),
                        node_health.c.state)
                 .select_from(node_health.join(devices, devices.c.id == node_health.c.device_id))
                 .where(or_(battery <= battery_pct_max, load >= cpu_load_min,
                            draining.is_(True)))
                 .order_by(devices.c.name).limit(limit))  # fmt: skip
        return [dict(r._mapping) for r in self._c.execute(query)]

    def device_rollouts(self, device_id: str, limit: int) -> list[dict[str, Any]]:
        """The rollouts that targeted a device, newest first, with its record in each."""
        rd = rollout_devices
        query = (select(rollouts.c.id, rollouts.c.name, rollouts.c.release,
                        rollouts.c.state.label("rollout_state"), rollouts.c.created_at,
                        rd.c.wave, rd.c.state, rd.c.attempts, rd.c.reason,
                        rd.c.previous_release, rd.c.first_assigned_at, rd.c.installed_at)
                 .select_from(rd.join(rollouts, rollouts.c.id == rd.c.rollout_id))
                 .where(rd.c.device_id == device_id)
                 .order_by(rollouts.c.created_at.desc()).limit(limit))  # fmt: skip
        return [dict(r._mapping) for r in self._c.execute(query)]

    def audit_about(self, target: str, limit: int) -> list[dict[str, Any]]:
        """The newest audit records about `target` (e.g. device/ID), newest first."""
        query = (select(audit_log.c.seq, audit_log.c.at, audit_log.c.actor,
                        audit_log.c.action, audit_log.c.details)
                 .where(audit_log.c.target == target)
                 .order_by(audit_log.c.seq.desc()).limit(limit))  # fmt: skip
        return [dict(r._mapping) for r in self._c.execute(query)]

    def device_release_events(self, device_id: str, limit: int) -> list[dict[str, Any]]:
        """Rollout events about a device (assignments, installs, failures, rollbacks with
        their reasons), newest first."""
        ev = rollout_events
        query = (select(ev.c.rollout_id, rollouts.c.name.label("rollout"), ev.c.at, ev.c.kind,
                        ev.c.reason)
                 .select_from(ev.join(rollouts, rollouts.c.id == ev.c.rollout_id))
                 .where(ev.c.device_id == device_id)
                 .order_by(ev.c.at.desc(), ev.c.seq.desc()).limit(limit))  # fmt: skip
        return [dict(r._mapping) for r in self._c.execute(query)]
