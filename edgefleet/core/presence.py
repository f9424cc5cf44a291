"""Presence: whether a device holds a connection to the MQTT broker, as the device itself
said so (an `online` message when it connects) or as the broker said for it (the device's
Last Will, `offline`, published when the connection ends without a clean goodbye).

Both messages are signed by the device when it connects: the online message with sequence
number N, the Will with N + 1 (the Will is registered first, but it fires last). The
control plane takes a presence message only when its sequence number is larger than that
of the last one it took, so

- the Will of the current connection (N + 1) follows its online message (N);
- an old Will replayed (or delivered late, after the device reconnected) carries a smaller
  number than the new connection's online message and is refused;
- the Will's timestamp is not checked for freshness (it was signed at connect time, maybe
  days ago): its order is what counts.

>>> from datetime import datetime, timezone
>>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> on = observe_presence(None, PresenceState.ONLINE, 10, t, 300.0)
>>> on.accepted, on.record.state
(True, <PresenceState.ONLINE: 'online'>)
>>> observe_presence(on.record, PresenceState.OFFLINE, 11, t, 300.0).record.state
<PresenceState.OFFLINE: 'offline'>
>>> stale = observe_presence(on.record, PresenceState.OFFLINE, 9, t, 300.0)
>>> stale.accepted, stale.reason
(False, 'presence offline #9 is not newer than the last presence taken (online #10)')
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class PresenceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Presence:
    """The last presence message taken for a device."""

    state: PresenceState
    at: datetime  # when the control plane took it
    seq: int  # its sequence number
    # The heartbeat interval the device is told while it is online and hosts nothing
    # (the broker's keep-alive and the Will stand for its heartbeats); None when offline.
    idle_interval_s: float | None = None


@dataclass(frozen=True)
class PresenceDecision:
    accepted: bool
    record: Presence | None  # the presence after the message (the old one when refused)
    reason: str


def observe_presence(
    record: Presence | None,
    state: PresenceState,
    seq: int,
    at: datetime,
    idle_interval_s: float | None,
) -> PresenceDecision:
    """Take a presence message with sequence number `seq` at `at`, unless a newer one was
    taken already. `idle_interval_s`: what an online device hosting nothing is told."""
    if record is not None and seq <= record.seq:
        return PresenceDecision(
            False,
            record,
            f"presence {state.value} #{seq} is not newer than the last presence taken "
            f"({record.state.value} #{record.seq})",
        )
    interval = idle_interval_s if state is PresenceState.ONLINE else None
    return PresenceDecision(True, Presence(state, at, seq, interval), f"device {state.value}")


def parse_presence(payload: bytes) -> PresenceState | None:
    """The state a presence message's payload names, None when it names none.

    >>> parse_presence(b"offline"), parse_presence(b"gone")
    (<PresenceState.OFFLINE: 'offline'>, None)
    """
    try:
        return PresenceState(payload.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
