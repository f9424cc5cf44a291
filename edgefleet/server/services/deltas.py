"""Delta service: computes and caches deltas between artifact versions, off the API path.

A delta from blob A to blob B is made once, in a separate low-priority process (delta
creation is CPU-heavy; the API never waits for it), and kept in DATA_DIR/deltas/B/A.delta.
It is offered only when it is smaller than the full blob by a margin; otherwise devices
download the blob. Pairs are scheduled when a release is assigned, from the versions the
devices report running, so most deltas are ready before the first device asks.

The cache is bounded: housekeeping forgets pairs whose blobs are gone and then the least
recently served deltas until the rest fits the configured size.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edgefleet.artifacts.blobstore import BlobStore, validate_sha256
from edgefleet.artifacts.delta import create_delta
from edgefleet.atomicfile import write_json_atomically

log = logging.getLogger(__name__)

# Offer a delta only when it is at most this fraction of the full blob.
DEFAULT_MARGIN = 0.8
MAX_PENDING_DELTAS = 32  # pairs scheduled or being computed at once


class DeltaState(StrEnum):
    READY = "ready"
    PENDING = "pending"
    NOT_WORTHWHILE = "not-worthwhile"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"  # base or target not in the blob store


@dataclass(frozen=True)
class DeltaStatus:
    state: DeltaState
    from_sha256: str
    to_sha256: str
    delta_size: int | None = None
    target_size: int | None = None
    reason: str = ""

    @property
    def ratio(self) -> float | None:
        if self.delta_size is None or not self.target_size:
            return None
        return self.delta_size / self.target_size


def _lower_priority() -> None:
    os.nice(10)


def _create(old: str, new: str, out: str) -> tuple[int, int]:
    info = create_delta(Path(old), Path(new), Path(out))
    return info.delta_size, info.target_size


class DeltaService:
    def __init__(self, blobs: BlobStore, cache_dir: Path, margin: float = DEFAULT_MARGIN) -> None:
        self._blobs = blobs
        self._cache = cache_dir
        self._margin = margin
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], Future[tuple[int, int]]] = {}
        self._pool: ProcessPoolExecutor | None = None

    def path(self, from_sha256: str, to_sha256: str) -> Path:
        return self._cache / to_sha256 / f"{from_sha256}.delta"

    def _meta_path(self, from_sha256: str, to_sha256: str) -> Path:
        return self._cache / to_sha256 / f"{from_sha256}.json"

    def status(self, from_sha256: str, to_sha256: str) -> DeltaStatus:
        """What is known about the pair, without scheduling anything."""
        pair = (validate_sha256(from_sha256), validate_sha256(to_sha256))
        meta = self._meta_path(*pair)
        if meta.exists():
            try:
                recorded = json.loads(meta.read_text())
            except FileNotFoundError:  # pruned just now
                recorded = {"state": DeltaState.UNAVAILABLE.value, "reason": "pruned"}
            state = DeltaState(recorded["state"])
            if state is DeltaState.READY and not self.path(*pair).exists():
                state, recorded = DeltaState.UNAVAILABLE, {"reason": "pruned"}
            return DeltaStatus(state, *pair, recorded.get("delta_size"),
                               recorded.get("target_size"), recorded.get("reason", ""))
        with self._lock:
            if pair in self._running:
                return DeltaStatus(DeltaState.PENDING, *pair)
        if not (self._blobs.exists(pair[0]) and self._blobs.exists(pair[1])):
            return DeltaStatus(DeltaState.UNAVAILABLE, *pair, reason="base or target unknown")
        return DeltaStatus(DeltaState.PENDING, *pair, reason="not scheduled")

    def request(self, from_sha256: str, to_sha256: str) -> DeltaStatus:
        """The pair's status, scheduling its creation if it is not known yet."""
        current = self.status(from_sha256, to_sha256)
        if current.state is not DeltaState.PENDING or current.reason != "not scheduled":
            return current
        pair = (current.from_sha256, current.to_sha256)
        with self._lock:
            if pair not in self._running and len(self._running) >= MAX_PENDING_DELTAS:
                # Bounded work: the device downloads in full and may ask again later.
                return DeltaStatus(DeltaState.UNAVAILABLE, *pair, reason=(
                    f"{MAX_PENDING_DELTAS} deltas are being computed; try later"))  # fmt: skip
            if pair not in self._running:
                self.path(*pair).parent.mkdir(parents=True, exist_ok=True)
                future = self._executor().submit(
                    _create,
                    str(self._blobs.path(pair[0])),
                    str(self._blobs.path(pair[1])),
                    str(self.path(*pair)),
                )
                self._running[pair] = future
                future.add_done_callback(functools.partial(self._finished, pair))
        return DeltaStatus(DeltaState.PENDING, *pair)

    def _finished(self, pair: tuple[str, str], future: Future[tuple[int, int]]) -> None:
        try:
            delta_size, target_size = future.result()
            worthwhile = delta_size <= self._margin * target_size
            state = DeltaState.READY if worthwhile else DeltaState.NOT_WORTHWHILE
            record = {"state": state.value, "delta_size": delta_size,
                      "target_size": target_size}
            if not worthwhile:
                self.path(*pair).unlink(missing_ok=True)
        except Exception as e:  # the child's failure is recorded; devices download in full
            log.warning("delta creation failed", extra={"from": pair[0], "to": pair[1],
                                                        "error": str(e)})
            record = {"state": DeltaState.FAILED.value, "reason": str(e)[:300]}
        write_json_atomically(self._meta_path(*pair), record)
        with self._lock:
            self._running.pop(pair, None)

    def touch(self, from_sha256: str, to_sha256: str) -> None:
        """Mark the pair's delta as just served (the cache evicts the least recent)."""
        with contextlib.suppress(OSError):
            os.utime(self.path(from_sha256, to_sha256))

    def prune(self, max_bytes: int) -> int:
        """Forget pairs whose base or target blob (or ready delta) is gone, then the least
        recently served deltas until the cache holds at most `max_bytes`; returns the pairs
        removed."""
        with self._lock:
            busy = set(self._running)
        entries: list[tuple[float, int, tuple[str, str]]] = []
        removed = 0
        for meta in self._cache.glob("*/*.json"):
            pair = (meta.stem, meta.parent.name)
            if pair in busy:
                continue
            delta = self.path(*pair)
            if not (self._blobs.exists(pair[0]) and self._blobs.exists(pair[1])):
                self._forget(pair)
                removed += 1
                continue
            try:
                stat = delta.stat()
            except FileNotFoundError:  # nothing kept, or a ready delta removed by hand
                if self.status(*pair).reason == "pruned":
                    self._forget(pair)
                    removed += 1
                continue
            entries.append((stat.st_mtime, stat.st_size, pair))
        total = sum(size for _, size, _ in entries)
        for _, size, pair in sorted(entries):
            if total <= max_bytes:
                break
            self._forget(pair)
            total -= size
            removed += 1
        return removed

    def _forget(self, pair: tuple[str, str]) -> None:
        """Remove a pair: its delta first, so a meta never claims a missing READY delta
        for long (status() re-checks the file, below, for the moment in between)."""
        self.path(*pair).unlink(missing_ok=True)
        self._meta_path(*pair).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._cache.joinpath(pair[1]).rmdir()  # only when empty

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # A separate process at lower priority: creation never competes with the API
            # for the interpreter, and the OS favours the API for CPU.
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_lower_priority,
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
