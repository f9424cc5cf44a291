"""Exactly-once telemetry ingest: which batch the control plane stores and what it acknowledges.

A device numbers its batches 1, 2, 3, ... and uploads them oldest first. The control plane
keeps one cursor per device: `acked_through_seq`, the sequence up to which it holds every
batch it will ever get. With each upload the device declares `dropped_through_seq`: every
batch up to there that the server lacks is gone for good (dropped when the device's queue
overflowed, or refused as unreadable). So the next batch the server can take is

    expected = max(acked_through_seq, dropped_through_seq) + 1

and a batch is stored exactly when its sequence is `expected`; the acknowledgement is then
that sequence. Anything at or below the cursor is a duplicate (a retry whose answer was
lost, or a replay), anything above `expected` would leave a hole:

    cursor 7, batch 8,  dropped through 0   store, ack 8
    cursor 7, batch 12, dropped through 11  store, ack 12 (9..11 never come)
    cursor 7, batch 7,  dropped through 0   duplicate: store nothing, the ack stays 7
    cursor 7, batch 10, dropped through 8   gap: 9 is still due

Because the cursor and the windows of a batch are written in one transaction, a batch is
stored once or not at all, whatever fails and however often the device retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from edgefleet.core.telemetry.clock import ClockRecord


@dataclass(frozen=True)
class IngestCursor:
    """What the control plane knows about one device's telemetry stream."""

    acked_through_seq: int = 0
    batches_stored: int = 0
    windows_stored: int = 0
    # Cumulative drop counts as the device last reported them.
    dropped_batches_total: int = 0
    dropped_windows_total: int = 0
    last_batch_at: datetime | None = None
    # The device's clock and the windows moved for it.
    clock: ClockRecord = field(default_factory=ClockRecord)


class IngestVerdict(StrEnum):
    STORE = "store"
    DUPLICATE = "duplicate"  # already stored (or stepped over): store nothing
    GAP = "gap"  # an earlier batch is still due
    BAD_DECLARATION = "bad_declaration"  # dropped_through_seq at or after the batch itself


@dataclass(frozen=True)
class IngestDecision:
    verdict: IngestVerdict
    acked_through_seq: int  # what to acknowledge after acting on the decision
    expected_seq: int
    reason: str


def expected_seq(cursor: IngestCursor, dropped_through_seq: int) -> int:
    """The only sequence the server can store next."""
    return max(cursor.acked_through_seq, dropped_through_seq) + 1


def decide_ingest(cursor: IngestCursor, seq: int, dropped_through_seq: int) -> IngestDecision:
    """Store, or why not.

    >>> decide_ingest(IngestCursor(acked_through_seq=7), 12, 11).verdict
    <IngestVerdict.STORE: 'store'>
    >>> decide_ingest(IngestCursor(acked_through_seq=7), 7, 0).verdict
    <IngestVerdict.DUPLICATE: 'duplicate'>
    """
    acked = cursor.acked_through_seq
    if dropped_through_seq >= seq:
        return IngestDecision(
            IngestVerdict.BAD_DECLARATION,
            acked,
            seq,
            f"batch {seq} cannot be declared dropped (dropped_through_seq "
            f"{dropped_through_seq} must be below the batch's own sequence)",
        )
    expected = expected_seq(cursor, dropped_through_seq)
    if seq < expected:
        return IngestDecision(
            IngestVerdict.DUPLICATE,
            acked,
            expected,
            f"batch {seq} is already stored or stepped over: acknowledged through {acked}",
        )
    if seq > expected:
        return IngestDecision(
            IngestVerdict.GAP,
            acked,
            expected,
            f"batch {seq} would leave a gap: batch {expected} is due next "
            f"(acknowledged through {acked}, dropped through {dropped_through_seq})",
        )
    stepped = f", stepping over {acked + 1}..{seq - 1} dropped" if seq > acked + 1 else ""
    return IngestDecision(IngestVerdict.STORE, seq, expected, f"batch {seq} stored{stepped}")


def advance_cursor(
    cursor: IngestCursor,
    seq: int,
    windows: int,
    dropped_batches_total: int,
    dropped_windows_total: int,
    now: datetime,
) -> IngestCursor:
    """The cursor after storing batch `seq` with `windows` windows (decided STORE)."""
    return replace(
        cursor,
        acked_through_seq=seq,
        batches_stored=cursor.batches_stored + 1,
        windows_stored=cursor.windows_stored + windows,
        # Totals are cumulative on the device; keep the largest seen in case of a reordering.
        dropped_batches_total=max(cursor.dropped_batches_total, dropped_batches_total),
        dropped_windows_total=max(cursor.dropped_windows_total, dropped_windows_total),
        last_batch_at=now,
    )
