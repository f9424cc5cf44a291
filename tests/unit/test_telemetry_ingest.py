"""Exactly-once ingest decisions: what the control plane stores and acknowledges."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.telemetry.ingest import (
    IngestCursor,
    IngestVerdict,
    advance_cursor,
    decide_ingest,
)

T0 = datetime(2026, 11, 27, tzinfo=UTC)


@pytest.mark.parametrize(
    ("acked", "seq", "dropped", "verdict", "ack"),
    [
        (0, 1, 0, IngestVerdict.STORE, 1),
        (7, 8, 0, IngestVerdict.STORE, 8),
        (7, 12, 11, IngestVerdict.STORE, 12),  # 9..11 dropped on the device
        (7, 8, 3, IngestVerdict.STORE, 8),  # an old drop changes nothing
        (7, 7, 0, IngestVerdict.DUPLICATE, 7),
        (7, 2, 0, IngestVerdict.DUPLICATE, 7),
        (7, 10, 8, IngestVerdict.GAP, 7),  # 9 is still due
        (0, 3, 0, IngestVerdict.GAP, 0),
        (7, 9, 9, IngestVerdict.BAD_DECLARATION, 7),
        (7, 9, 12, IngestVerdict.BAD_DECLARATION, 7),
    ],
)
def test_decisions(acked: int, seq: int, dropped: int, verdict: IngestVerdict, ack: int) -> None:
    decision = decide_ingest(IngestCursor(acked_through_seq=acked), seq, dropped)
    assert decision.verdict is verdict
    assert decision.acked_through_seq == ack
    assert str(seq) in decision.reason


def test_the_reason_names_what_is_due() -> None:
    decision = decide_ingest(IngestCursor(acked_through_seq=7), 10, 8)
    assert "batch 9 is due next" in decision.reason
    assert "stepping over 8..11" in decide_ingest(IngestCursor(acked_through_seq=7), 12, 11).reason


def test_advancing_counts_batches_windows_and_keeps_the_largest_drop_totals() -> None:
    cursor = advance_cursor(IngestCursor(), 1, 10, 2, 30, T0)
    cursor = advance_cursor(cursor, 2, 5, 1, 10, T0)  # totals never go down
    assert cursor == IngestCursor(2, 2, 15, 2, 30, T0)


@given(
    drops=st.sets(st.integers(1, 40)),
    retries=st.lists(st.integers(0, 3), min_size=40, max_size=40),
    lost_answers=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_an_honest_device_gets_every_kept_batch_stored_exactly_once(
    drops: set[int], retries: list[int], lost_answers: list[bool]
) -> None:
    """Batches 1..40, some dropped on the device, each sent possibly several times and with
    answers lost: the server stores exactly the kept ones, once each, in order."""
    cursor = IngestCursor()
    stored: list[int] = []
    device_acked = 0
    for seq in range(1, 41):
        if seq in drops:
            continue
        dropped_through = max([d for d in drops if d < seq], default=0)
        for _ in range(1 + retries[seq - 1]):
            if device_acked >= seq:
                break  # acknowledged: the device has forgotten it
            declared = max(dropped_through, device_acked)
            decision = decide_ingest(cursor, seq, declared)
            assert decision.verdict in (IngestVerdict.STORE, IngestVerdict.DUPLICATE)
            if decision.verdict is IngestVerdict.STORE:
                stored.append(seq)
                cursor = advance_cursor(cursor, seq, 1, 0, 0, T0)
            if not lost_answers[seq - 1]:
                device_acked = max(device_acked, decision.acked_through_seq)
        device_acked = max(device_acked, cursor.acked_through_seq)  # a resync
    kept = [s for s in range(1, 41) if s not in drops]
    assert stored == kept
    assert cursor.batches_stored == len(kept)
