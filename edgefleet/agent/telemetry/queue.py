"""The agent's store-and-forward queue: encoded telemetry batches in one SQLite file.

`append` gives each batch the next device sequence number and stores its wire bytes in the
same transaction that advances the counter, so a kill at any instant leaves either the batch
with its number or neither, and a number is never handed out twice. The queue is bounded in
rows and bytes: to make room it drops the oldest batches and adds them to cumulative drop
totals, which every later batch carries to the server. `pending` reads the oldest unacked
batches in order; `ack(up_to_seq)` deletes them once the server has stored them.

The batch being uploaded is never evicted (`sending`): were it dropped while on its way,
the server could store it and the device count it as dropped too. An append that would
need to evict it stores its batch anyway, over the bounds by that one batch until the
upload's acknowledgement deletes it (or a later append evicts it, once it is not in flight).

The server acknowledges the highest *contiguous* sequence it stored; batches dropped here
leave gaps. `QueueStatus.dropped_through_seq` is the highest sequence number ever dropped,
which the uploader sends along so the server can step over the gap instead of waiting.

Schema (WAL journal, synchronous=FULL so a committed append survives power loss)::

    batch(seq INTEGER PRIMARY KEY, payload BLOB, windows INTEGER, bytes INTEGER)
    counter(name TEXT PRIMARY KEY, value INTEGER)
        next_seq, acked_through_seq, dropped_through_seq,
        dropped_batches_total, dropped_windows_total
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edgefleet.core.telemetry.windows import Window
from edgefleet.core.telemetry.wire import Batch, encode_batch
from edgefleet.errors import InvalidInput, PayloadTooLarge, StoreError

FILE_NAME = "telemetry-queue.sqlite3"
DEFAULT_MAX_BYTES = 16 << 20
DEFAULT_MAX_ROWS = 10_000

_COUNTERS = (
    "next_seq",
    "acked_through_seq",
    "dropped_through_seq",
    "dropped_batches_total",
    "dropped_windows_total",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    seq INTEGER PRIMARY KEY,
    payload BLOB NOT NULL,
    windows INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

Encoder = Callable[[Batch], bytes]
_T = TypeVar("_T")


@dataclass(frozen=True)
class QueuedBatch:
    seq: int
    payload: bytes  # the wire bytes, ready to upload as they are
    windows: int


@dataclass(frozen=True)
class QueueStatus:
    rows: int
    bytes: int
    next_seq: int
    acked_through_seq: int
    dropped_through_seq: int
    dropped_batches_total: int
    dropped_windows_total: int


class TelemetryQueue:
    """A bounded, crash-safe FIFO of encoded batches. Safe to call from several threads."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_rows: int = DEFAULT_MAX_ROWS,
        encoder: Encoder = encode_batch,
    ) -> None:
        if max_bytes < 1 or max_rows < 1:
            raise InvalidInput("queue bounds must be positive", code="bad_queue_bounds")
        self.path = path
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self._encode = encoder
        self._lock = threading.Lock()
        self._in_flight: int | None = None  # the batch being uploaded: never evicted
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._db.executemany(
                "INSERT OR IGNORE INTO counter(name, value) VALUES (?, ?)",
                [(name, 1 if name == "next_seq" else 0) for name in _COUNTERS],
            )
        except sqlite3.Error as e:
            raise StoreError(f"cannot open telemetry queue {path}: {e}") from e

    @classmethod
    def in_data_dir(
        cls, data_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_rows: int = DEFAULT_MAX_ROWS
    ) -> TelemetryQueue:
        """The queue file of an agent whose data directory is `data_dir`."""
        return cls(data_dir / FILE_NAME, max_bytes=max_bytes, max_rows=max_rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> TelemetryQueue:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def sending(self, seq: int) -> Iterator[None]:
        """Mark batch `seq` as on its way to the server while the block runs."""
        with self._lock:
            self._in_flight = seq
        try:
            yield
        finally:
            with self._lock:
                self._in_flight = None

    def _counters(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT name, value FROM counter").fetchall())

    def _set(self, **values: int) -> None:
        self._db.executemany(
            "UPDATE counter SET value = ? WHERE name = ?", [(v, k) for k, v in values.items()]
        )

    def _transaction(self, work: Callable[[], _T]) -> _T:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work()
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as e:
                raise StoreError(f"telemetry queue {self.path}: {e}") from e

    def append(self, windows: Sequence[Window]) -> int:
        """Store `windows` as the next batch; return its sequence number.

        Drops the oldest batches first if the new one would overflow the bounds; refuses
        (PayloadTooLarge) a batch bigger than the whole queue.
        """

        def work() -> int:
            counters = self._counters()
            seq = counters["next_seq"]
            rows, used = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM batch"
            ).fetchone()
            dropped_batches = counters["dropped_batches_total"]
            dropped_windows = counters["dropped_windows_total"]
            dropped_through = counters["dropped_through_seq"]
            victims = 0
            while True:
                # The drop totals travel in the batch and eviction depends on the batch's
                # size, so encode, and evict one more and re-encode until it fits.
                batch = Batch(seq, tuple(windows), dropped_batches, dropped_windows)
                payload = self._encode(batch)
                if len(payload) > self.max_bytes:
                    raise PayloadTooLarge(
                        f"a batch of {len(payload)} bytes exceeds the queue's {self.max_bytes}",
                        code="batch_too_large",
                    )
                if rows + 1 <= self.max_rows and used + len(payload) <= self.max_bytes:
                    break
                old_seq, old_windows, old_bytes = self._db.execute(
                    "SELECT seq, windows, bytes FROM batch WHERE seq > ? ORDER BY seq LIMIT 1",
                    (dropped_through,),
                ).fetchone()
                if old_seq == self._in_flight:
                    break  # over the bounds by the batch in flight, until it is acknowledged
                victims += 1
                rows -= 1
                used -= old_bytes
                dropped_batches += 1
                dropped_windows += old_windows
                dropped_through = old_seq
            if victims:
                self._db.execute("DELETE FROM batch WHERE seq <= ?", (dropped_through,))
            self._db.execute(
                "INSERT INTO batch(seq, payload, windows, bytes) VALUES (?, ?, ?, ?)",
                (seq, payload, len(windows), len(payload)),
            )
            self._set(
                next_seq=seq + 1,
                dropped_batches_total=dropped_batches,
                dropped_windows_total=dropped_windows,
                dropped_through_seq=dropped_through,
            )
            return seq

        return self._transaction(work)

    def pending(self, limit: int = 100, max_bytes: int | None = None) -> list[QueuedBatch]:
        """The oldest unacked batches in sequence order: at most `limit`, and no more than
        `max_bytes` in total (but always at least one, so a large batch is not stuck)."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, payload, windows FROM batch ORDER BY seq LIMIT ?", (limit,)
                ).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"telemetry queue {self.path}: {e}") from e
        out: list[QueuedBatch] = []
        total = 0
        for seq, payload, windows in rows:
            total += len(payload)
            if out and max_bytes is not None and total > max_bytes:
                break
            out.append(QueuedBatch(seq, bytes(payload), windows))
        return out

    def ack(self, up_to_seq: int) -> int:
        """Delete every batch up to `up_to_seq` (the server has them); return how many.

        Acks are idempotent and may go backwards (a retried response); an ack beyond the
        last sequence handed out is refused, since no server can have stored that batch.
        """

        def work() -> int:
            counters = self._counters()
            if up_to_seq >= counters["next_seq"]:
                raise InvalidInput(
                    f"ack of sequence {up_to_seq}, but only {counters['next_seq'] - 1} were sent",
                    code="ack_beyond_sent",
                )
            deleted = self._db.execute("DELETE FROM batch WHERE seq <= ?", (up_to_seq,)).rowcount
            self._set(acked_through_seq=max(up_to_seq, counters["acked_through_seq"]))
            return int(deleted)

        return self._transaction(work)

    def status(self) -> QueueStatus:
        with self._lock:
            try:
                counters = self._counters()
                rows, used = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM batch"
                ).fetchone()
            except sqlite3.Error as e:
                raise StoreError(f"telemetry queue {self.path}: {e}") from e
        return QueueStatus(rows=rows, bytes=used, **counters)
