"""Devices: the record of one enrolled node, and its connection status from last-seen time
and, on the MQTT channel, its presence (`core/presence.py`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.presence import Presence, PresenceState
from edgefleet.core.updates.release import ReleaseAssignment

# A device is online while its last heartbeat is younger than this many intervals, stale up
# to OFFLINE_AFTER_INTERVALS, offline beyond. Three intervals tolerate two lost heartbeats.
ONLINE_WITHIN_INTERVALS = 3
OFFLINE_AFTER_INTERVALS = 10


class ConnectionStatus(StrEnum):
    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"


def classify_connection(
    last_seen: datetime | None,
    now: datetime,
    heartbeat_interval_s: float,
    presence: Presence | None = None,
) -> ConnectionStatus:
    """online / stale / offline from the age of the last heartbeat; on the MQTT channel a
    Will (presence offline, taken after the last heartbeat) is offline at once, and an
    online device hosting nothing is judged against the longer interval it was told.

    >>> from datetime import datetime, timedelta, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> classify_connection(t, t + timedelta(seconds=20), 15)
    <ConnectionStatus.ONLINE: 'online'>
    >>> will = Presence(PresenceState.OFFLINE, t + timedelta(seconds=1), 8)
    >>> classify_connection(t, t + timedelta(seconds=2), 15, will)
    <ConnectionStatus.OFFLINE: 'offline'>
    """
    if last_seen is None:
        return ConnectionStatus.OFFLINE
    if presence is not None and presence.state is PresenceState.OFFLINE:
        if presence.at >= last_seen:
            return ConnectionStatus.OFFLINE
    elif presence is not None and presence.idle_interval_s is not None:
        heartbeat_interval_s = max(heartbeat_interval_s, presence.idle_interval_s)
    age_s = (now - last_seen).total_seconds()
    if age_s <= ONLINE_WITHIN_INTERVALS * heartbeat_interval_s:
        return ConnectionStatus.ONLINE
    if age_s <= OFFLINE_AFTER_INTERVALS * heartbeat_interval_s:
        return ConnectionStatus.STALE
    return ConnectionStatus.OFFLINE


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    public_key: str
    enrollment: EnrollmentState
    labels: Mapping[str, str]
    inventory: Mapping[str, Any]
    enrollment_token_id: str | None
    created_at: datetime
    last_seen: datetime | None = None
    heartbeat_interval_s: float = 15.0
    desired_generation: int = 0
    desired: Mapping[str, Any] = field(default_factory=dict)
    applied_generation: int = 0
    release_assignment: ReleaseAssignment | None = None
    release_status: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1
    presence: Presence | None = None  # on the MQTT channel: the last presence message taken

    def connection(self, now: datetime) -> ConnectionStatus:
        return classify_connection(self.last_seen, now, self.heartbeat_interval_s, self.presence)
