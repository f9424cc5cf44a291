"""Delta service: computes and caches deltas between artifact versions, off the API path.

A delta from blob A to blob B is made once, in a child process of its own at lower CPU
priority (delta creation is CPU-heavy; the API never waits for it; one child at a time,
`delta_child.py`), and kept in DATA_DIR/deltas/B/A.delta.
It is offered only when it is smaller than the full blob by a margin; otherwise devices
download the blob. Pairs are scheduled when a release is assigned, from the versions the
devices report running, so most deltas are ready before the first device asks.

The cache is bounded: housekeeping forgets pairs whose blobs are gone and then the least
recently served deltas until the rest fits the configured size.

No process outlives the server: `close()` kills the child at work and waits for it, and the
child dies with the server if the server is killed. Plain subprocesses rather than a
multiprocessing pool: a pool's worker and its resource tracker (started for the pool's
semaphores) were left running, reparented to init, after a SIGTERM or a SIGKILL.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import edgefleet
from edgefleet.artifacts.blobstore import BlobStore, validate_sha256
from edgefleet.atomicfile import write_json_atomically
from edgefleet.server.services.delta_child import MODULE as CHILD_MODULE

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


class _Stopped(Exception):
    """The service closed while the pair was being computed (nothing is recorded)."""


class DeltaService:
    def __init__(
        self,
        blobs: BlobStore,
        cache_dir: Path,
        margin: float = DEFAULT_MARGIN,
        computes: bool = True,
    ) -> None:
        """`computes`: whether this replica makes deltas (the `deltas` role); without it,
        `request` only reports what the shared cache holds, and a replica with the role
        makes the delta when a device asks it."""
        self._blobs = blobs
        self._cache = cache_dir
        self._margin = margin
        self._computes = computes
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], Future[tuple[int, int]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._children: set[subprocess.Popen[bytes]] = set()
        self._closed = False

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
            return DeltaStatus(
                state,
                *pair,
                recorded.get("delta_size"),
                recorded.get("target_size"),
                recorded.get("reason", ""),
            )
        with self._lock:
            if pair in self._running:
                return DeltaStatus(DeltaState.PENDING, *pair)
        if not (self._blobs.exists(pair[0]) and self._blobs.exists(pair[1])):
            return DeltaStatus(DeltaState.UNAVAILABLE, *pair, reason="base or target unknown")
        return DeltaStatus(DeltaState.PENDING, *pair, reason="not scheduled")

    def request(self, from_sha256: str, to_sha256: str) -> DeltaStatus:
        """The pair's status, scheduling its creation if it is not known yet."""
        current = self.status(from_sha256, to_sha256)
        if (
            not self._computes
            or current.state is not DeltaState.PENDING
            or current.reason != "not scheduled"
        ):
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
                    self._create,
                    str(self._blobs.path(pair[0])),
                    str(self._blobs.path(pair[1])),
                    str(self.path(*pair)),
                )
                self._running[pair] = future
                future.add_done_callback(functools.partial(self._finished, pair))
        return DeltaStatus(DeltaState.PENDING, *pair)

    def _create(self, old: str, new: str, out: str) -> tuple[int, int]:
        """Compute one delta in a child process; its sizes (delta, target)."""
        with self._lock:  # close() kills what is registered here, and nothing starts after
            if self._closed:
                raise _Stopped
            child = subprocess.Popen(
                [sys.executable, "-m", CHILD_MODULE, str(os.getpid()), old, new, out],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=_child_env(),
            )  # fmt: skip
            self._children.add(child)
        try:
            stdout, stderr = child.communicate()
        finally:
            with self._lock:
                self._children.discard(child)
        if self._closed:
            raise _Stopped
        if child.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"exited with {child.returncode}")
        answer = json.loads(stdout)
        return int(answer["delta_size"]), int(answer["target_size"])

    def _finished(self, pair: tuple[str, str], future: Future[tuple[int, int]]) -> None:
        if future.cancelled() or isinstance(future.exception(), _Stopped):
            with self._lock:  # computed anew when asked after a restart
                self._running.pop(pair, None)
            return
        try:
            delta_size, target_size = future.result()
            worthwhile = delta_size <= self._margin * target_size
            state = DeltaState.READY if worthwhile else DeltaState.NOT_WORTHWHILE
            record = {"state": state.value, "delta_size": delta_size, "target_size": target_size}
            if not worthwhile:
                self.path(*pair).unlink(missing_ok=True)
        except Exception as e:  # the child's failure is recorded; devices download in full
            log.warning(
                "delta creation failed", extra={"from": pair[0], "to": pair[1], "error": str(e)}
            )
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

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            # One thread waiting on one child at a time: creation never competes with the
            # API for the interpreter, and the OS favours the API for CPU (the child's nice).
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="delta")
        return self._pool

    def close(self) -> None:
        """Drop the queued pairs, kill the child at work and wait for it to exit."""
        with self._lock:
            self._closed = True
            children = list(self._children)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.kill()  # it ignores SIGTERM; a half-written delta is a temporary file
            child.wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _child_env() -> dict[str, str]:
    """The server's environment without its settings (the admin token among them); the
    child imports edgefleet even when the server runs from a source tree, and numpy's math
    libraries get one thread (the child has one core's worth of work)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    package_root = str(Path(edgefleet.__file__).resolve().parent.parent)
    python_path = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
