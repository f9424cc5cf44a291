from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgefleet.agent.telemetry.queue import FILE_NAME, TelemetryQueue
from edgefleet.core.telemetry.windows import MetricKind, Window
from edgefleet.core.telemetry.wire import Batch, decode_batch
from edgefleet.errors import InvalidInput, PayloadTooLarge

START_S = 1_772_438_400


def windows(n: int, first_start_s: int = START_S) -> list[Window]:
    return [
        Window("host.cpu.percent", MetricKind.GAUGE, (), first_start_s + 60 * i, 60, 6,
               60.0 + i, 5.0, 20.0 + i, 10.0)
        for i in range(n)
    ]  # fmt: skip


def open_queue(tmp_path: Path, **bounds: int) -> TelemetryQueue:
    return TelemetryQueue.in_data_dir(tmp_path, **bounds)


def test_batches_get_increasing_sequence_numbers_and_come_back_in_order(tmp_path: Path) -> None:
    with open_queue(tmp_path) as queue:
        seqs = [queue.append(windows(2, START_S + 120 * i)) for i in range(3)]
        assert seqs == [1, 2, 3]
        pending = queue.pending()
    assert [p.seq for p in pending] == [1, 2, 3]
    decoded = [decode_batch(p.payload) for p in pending]
    assert [b.seq for b in decoded] == [1, 2, 3]
    assert decoded[1].windows == tuple(windows(2, START_S + 120))
    assert (tmp_path / FILE_NAME).exists()


def test_ack_deletes_up_to_the_sequence_and_is_idempotent(tmp_path: Path) -> None:
    with open_queue(tmp_path) as queue:
        for _ in range(4):
            queue.append(windows(1))
        assert queue.ack(2) == 2
        assert [p.seq for p in queue.pending()] == [3, 4]
        assert queue.ack(2) == 0
        assert queue.ack(1) == 0  # a late, older ack changes nothing
        assert queue.status().acked_through_seq == 2
        with pytest.raises(InvalidInput) as err:
            queue.ack(5)
        assert err.value.code == "ack_beyond_sent"


def test_state_survives_a_restart(tmp_path: Path) -> None:
    with open_queue(tmp_path) as queue:
        for _ in range(3):
            queue.append(windows(1))
        queue.ack(1)
    with open_queue(tmp_path) as queue:
        assert [p.seq for p in queue.pending()] == [2, 3]
        assert queue.append(windows(1)) == 4
        queue.ack(4)
    with open_queue(tmp_path) as queue:
        assert queue.pending() == []
        assert queue.append(windows(1)) == 5  # numbers are never reused, even when empty


def test_a_full_queue_drops_the_oldest_and_reports_the_drops(tmp_path: Path) -> None:
    with open_queue(tmp_path, max_rows=3) as queue:
        for n in range(1, 6):
            queue.append(windows(n))
        status = queue.status()
        pending = queue.pending()
    assert [p.seq for p in pending] == [3, 4, 5]
    assert (status.rows, status.dropped_batches_total, status.dropped_windows_total) == (3, 2, 3)
    assert status.dropped_through_seq == 2
    newest = decode_batch(pending[-1].payload)
    assert (newest.dropped_batches_total, newest.dropped_windows_total) == (2, 3)
    # Totals are cumulative: a later batch still carries them if this one is lost.
    assert decode_batch(pending[0].payload).dropped_batches_total == 0


def test_the_batch_in_flight_is_never_evicted(tmp_path: Path) -> None:
    with open_queue(tmp_path, max_rows=2) as queue:
        queue.append(windows(1))
        queue.append(windows(1))
        with queue.sending(1):
            queue.append(windows(1))  # full: batch 1 would go, but it is on its way
            assert [p.seq for p in queue.pending()] == [1, 2, 3]
            assert queue.status().dropped_batches_total == 0
        queue.append(windows(1))  # no longer in flight: the oldest go, counted
        status = queue.status()
        assert [p.seq for p in queue.pending()] == [3, 4]
        assert (status.dropped_batches_total, status.dropped_through_seq) == (2, 2)


def test_the_byte_bound_holds(tmp_path: Path) -> None:
    with open_queue(tmp_path) as probe:
        probe.append(windows(3))
        one_batch_bytes = probe.status().bytes
    limit = int(one_batch_bytes * 3.5)
    with TelemetryQueue(tmp_path / "bounded.sqlite3", max_bytes=limit) as queue:
        for _ in range(10):
            queue.append(windows(3))
            assert queue.status().bytes <= limit
        status = queue.status()
    assert status.rows == 3
    assert status.dropped_batches_total == 7
    assert status.dropped_windows_total == 21


def test_a_batch_larger_than_the_queue_is_refused_without_side_effects(tmp_path: Path) -> None:
    with open_queue(tmp_path, max_bytes=200) as queue:
        queue.append(windows(1))
        many = [
            Window(f"app.metric{i}", MetricKind.GAUGE, (), START_S, 60, 1, i * 1.37, i * 1.37,
                   i * 1.37, i * 1.37)
            for i in range(200)
        ]  # fmt: skip
        with pytest.raises(PayloadTooLarge):
            queue.append(many)
        status = queue.status()
        assert (status.rows, status.next_seq, status.dropped_batches_total) == (1, 2, 0)


def test_a_failure_inside_append_rolls_everything_back(tmp_path: Path) -> None:
    def failing_encoder(_batch: Batch) -> bytes:
        raise RuntimeError("disk full, say")

    with open_queue(tmp_path, max_rows=1) as queue:
        queue.append(windows(1))
    with TelemetryQueue(tmp_path / FILE_NAME, max_rows=1, encoder=failing_encoder) as queue:
        with pytest.raises(RuntimeError):
            queue.append(windows(1))
        status = queue.status()
    assert (status.rows, status.next_seq, status.dropped_batches_total) == (1, 2, 0)


def test_pending_respects_a_byte_budget_but_always_returns_one(tmp_path: Path) -> None:
    with open_queue(tmp_path) as queue:
        for _ in range(5):
            queue.append(windows(2))
        size = len(queue.pending(1)[0].payload)
        assert len(queue.pending(10, max_bytes=size * 2)) == 2
        assert len(queue.pending(10, max_bytes=1)) == 1
        assert len(queue.pending(3)) == 3


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from edgefleet.agent.telemetry.queue import TelemetryQueue
    from edgefleet.core.telemetry.windows import MetricKind, Window

    queue = TelemetryQueue(Path(sys.argv[1]), max_rows=50)
    window = Window("g", MetricKind.GAUGE, (), 1772438400, 60, 1, 1.0, 1.0, 1.0, 1.0)
    while True:
        seq = queue.append([window])
        if seq % 7 == 0:
            queue.ack(seq - 3)
        print(seq, flush=True)
    """
)


def test_a_writer_killed_mid_append_loses_no_committed_batch_and_reuses_no_number(
    tmp_path: Path,
) -> None:
    path = tmp_path / FILE_NAME
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert writer.stdout is not None
    committed = [int(writer.stdout.readline()) for _ in range(120)]
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    last_committed = committed[-1]

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with TelemetryQueue(path, max_rows=50) as queue:
        status = queue.status()
        seqs = [p.seq for p in queue.pending(1000)]
        # Every reported append is there unless acked or dropped; nothing past next_seq.
        assert status.next_seq > last_committed
        assert seqs == list(range(seqs[0], status.next_seq))
        assert seqs[0] == max(status.acked_through_seq, status.dropped_through_seq) + 1
        assert queue.append(windows(1)) == status.next_seq
