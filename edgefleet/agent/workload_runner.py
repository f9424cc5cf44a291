"""Workload runner: runs exactly the workload replicas the desired state lists for this
device, each at its placement generation, and reports every copy's status.

    desired `workloads` section ─▶ fence: stop copies not listed at their generation
                                 ─▶ per listed replica: fetch + verify its releases (TUF,
                                    delivery) ─▶ restore a migrated state archive (sha256
                                    checked) ─▶ phase `run`: start under the supervisor
                                    (resource limits, restarts with backoff, health checks)
                                 ─▶ checkpoint requests: hook, archive, upload
    heartbeat ◀── report: one entry per copy (state, health, port, restarts, restored state)
                  and one per checkpoint made

Fencing on return: after a restart the agent starts no replica until it has received a
desired state from the control plane (it still pre-fetches artifacts from the saved one).
A node that was declared dead meanwhile has had its replicas moved: the fresh document no
longer lists them, so it never runs a copy it no longer owns. A node that kept running
while cut off (a partition) stops such copies as soon as the fresh document arrives.

Each replica gets `DATA_DIR/workloads/state/WORKLOAD/` as its state directory
(EDGEFLEET_STATE_DIR and the `{state_dir}` placeholder; the manifest's absolute `state_dir`
names it logically), a port (`service.port`, or a free one per copy with `port: auto`),
and its log in `DATA_DIR/logs/workload-WORKLOAD-REPLICA.log`. Memory is limited with
RLIMIT_AS at the replica's `resources.memory_mb`; `cpu_millicores` is a placement
reservation only (enforcing it needs cgroups).

Checkpoint hook: before archiving its state directory, the runner asks the running copy
to write its state out with `POST http://127.0.0.1:PORT/checkpoint` (when it has a port;
any answer, or none within 5 s, and the directory is archived as it is). While the
desired state names an ingest key (the fleet's sealing policy is on), the archive is
uploaded sealed to it (`security/sealed_stream.py`): what passes between the device and the
control plane carries none of the workload's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefleet.agent.install_helper import InstallHelper
from edgefleet.agent.link import ControlPlaneLink
from edgefleet.agent.release_service import pick_free_port
from edgefleet.agent.release_verification import ReleaseRefused
from edgefleet.agent.supervisor import HealthCheckSpec, ServiceSpec, Supervisor
from edgefleet.agent.telemetry.otlp_receiver import otlp_env
from edgefleet.agent.workload_artifacts import FetchedRelease, ReleaseCache
from edgefleet.agent.workload_state import archive_state, restore_state
from edgefleet.atomicfile import write_json_atomically
from edgefleet.clock import Clock
from edgefleet.core.protocol import (
    CheckpointReport,
    ReplicaHealth,
    ReplicaPhaseName,
    ReplicaState,
    ReplicaStatus,
    WorkloadsReport,
)
from edgefleet.core.updates.service_manifest import (
    ServiceManifest,
    expand_placeholders,
    parse_service_manifest,
    resolve_parameters,
)
from edgefleet.core.workloads.migration import CopyState
from edgefleet.core.workloads.section import (
    ReplicaEntry,
    ReplicaPhase,
    fence_replicas,
    parse_workloads_section,
)
from edgefleet.errors import ApiError, EdgefleetError, InvalidInput, NotFound, Unavailable
from edgefleet.security.sealed_stream import (
    CHUNK_BYTES,
    SEALED_ARCHIVE_CONTENT_TYPE,
    seal_stream,
)

# Workload specs load with the first replica: an idle agent without workloads does not
# hold them. (Service manifests are read by the install helper when a release is fetched.)
if TYPE_CHECKING:
    from edgefleet.core.workloads.workload import Workload
    from edgefleet.transport.http_client import LocalHttp

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 0.25  # how often copies' supervisor states are looked at
RECONCILE_INTERVAL_S = 5.0  # full passes without a change, to retry what failed
HOOK_TIMEOUT_S = 5.0
RETRY_MIN_S = 1.0
RUNNER_FILE = "runner.json"

Key = tuple[str, int]


def service_name(workload: str, replica: int) -> str:
    return f"workload-{workload}-{replica}"


@dataclass
class _Copy:
    entry: ReplicaEntry
    state: CopyState = CopyState.FETCHING
    detail: str = "fetching artifacts"
    releases: list[FetchedRelease] | None = None
    spec: ServiceSpec | None = None
    spec_for: ReplicaEntry | None = None
    started: bool = False
    health: str = "unknown"
    restarts: int = 0
    port: int | None = None
    retry_at_s: float = 0.0
    failures: int = 0


@dataclass
class _Persisted:
    ports: dict[str, int] = field(default_factory=dict)  # "w/r@gen" -> port
    restored: dict[str, str] = field(default_factory=dict)  # "w/r@gen" -> archive sha256


class WorkloadRunner:
    def __init__(
        self,
        data_dir: Path,
        link: ControlPlaneLink,
        clock: Clock,
        supervisor: Supervisor,
        *,
        inventory: Callable[[], Mapping[str, Any]],
        labels: Callable[[], Mapping[str, str]],
        on_change: Callable[[], None] = lambda: None,
        statsd_address: Callable[[], str | None] = lambda: None,
        otlp_address: Callable[[], str | None] = lambda: None,
        max_backoff_s: float = 60.0,
        helper: InstallHelper | None = None,
        sealing_key: Callable[[], bytes | None] = lambda: None,
    ) -> None:
        """`helper` verifies the releases replicas run (see ReleaseCache); `sealing_key`
        answers the ingest public key state archives are sealed to (None: sent plain)."""
        self._root = data_dir / "workloads"
        self._root.mkdir(parents=True, exist_ok=True)
        self._logs = data_dir / "logs"
        self._cache = ReleaseCache(self._root, data_dir / "tuf", link, clock, inventory, labels,
                                   helper)  # fmt: skip
        self._link = link
        self._clock = clock
        self._supervisor = supervisor
        self._on_change = on_change
        self._sealing_key = sealing_key
        self._statsd_address = statsd_address
        self._otlp_address = otlp_address
        self._max_backoff_s = max_backoff_s
        self._entries: tuple[ReplicaEntry, ...] = ()
        self._fresh = False
        self._copies: dict[Key, _Copy] = {}
        self._checkpoints: dict[str, CheckpointReport] = {}
        self._changed = asyncio.Event()
        self._persisted = self._load()
        self._reported: WorkloadsReport | None = None

    # -- what the agent sees -------------------------------------------------------------

    def want(self, section: Mapping[str, Any] | None, *, fresh: bool) -> None:
        """The `workloads` section of the latest desired state. `fresh`: received from the
        control plane just now (only then are replicas started, see the module doc)."""
        try:
            self._entries = parse_workloads_section(section)
        except InvalidInput as e:
            log.error("workloads section refused", extra={"error": e.message})
            return
        self._fresh = self._fresh or fresh
        self._changed.set()

    def report(self) -> WorkloadsReport | None:
        """The heartbeat's `workloads` section (None when there is nothing to say)."""
        replicas = tuple(self._copy_report(c) for _, c in sorted(self._copies.items()))
        if not replicas and not self._checkpoints:
            return None
        return WorkloadsReport(replicas=replicas, checkpoints=tuple(self._checkpoints.values()))

    async def run(self) -> None:
        """Follow `want()` forever; a full pass on every change and every few seconds."""
        last_pass_s = -RECONCILE_INTERVAL_S
        while True:
            await self._clock.pause(STATUS_INTERVAL_S, self._changed)
            due = self._clock.monotonic() - last_pass_s >= RECONCILE_INTERVAL_S
            if self._changed.is_set() or due:
                self._changed.clear()
                last_pass_s = self._clock.monotonic()
                try:
                    await self._reconcile()
                except (EdgefleetError, OSError) as e:
                    log.error("workload reconcile failed; will retry", extra={"error": str(e)})
            self._refresh_statuses()
            report = self.report()
            if report != self._reported:
                self._reported = report
                self._on_change()

    # -- reconciling ---------------------------------------------------------------------

    async def _reconcile(self) -> None:
        wanted = {e.key: e for e in self._entries}
        running = {key: copy.entry.generation for key, copy in self._copies.items()}
        for verdict in fence_replicas({k: e.generation for k, e in wanted.items()}, running):
            if not verdict.keep:
                await self._drop((verdict.workload, verdict.replica), verdict.reason)
        for key, entry in sorted(wanted.items()):
            copy = self._copies.setdefault(key, _Copy(entry))
            copy.entry = entry
            await self._converge(copy)
        requested = {e.checkpoint_migration: e for e in self._entries if e.checkpoint_migration}
        self._checkpoints = {m: r for m, r in self._checkpoints.items() if m in requested}
        for migration, entry in sorted(requested.items()):
            if migration not in self._checkpoints:
                result = await self._checkpoint(entry, migration)
                if result is not None:
                    self._checkpoints[migration] = result

    async def _drop(self, key: Key, reason: str) -> None:
        copy = self._copies.pop(key, None)
        if copy is not None and copy.started:
            with contextlib.suppress(NotFound):
                await self._supervisor.remove(service_name(*key))
        log.info(
            "workload copy stopped", extra={"workload": key[0], "replica": key[1], "reason": reason}
        )

    async def _converge(self, copy: _Copy) -> None:
        entry = copy.entry
        if self._clock.monotonic() < copy.retry_at_s:
            return
        try:
            if copy.releases is None:
                copy.releases = [await self._cache.ensure(r) for r in entry.releases]
                if not copy.started:
                    copy.state, copy.detail = CopyState.STAGED, "artifacts verified"
            restore = entry.restore
            key = _key(entry)
            if restore is not None and self._persisted.restored.get(key) != restore["sha256"]:
                copy.detail = "restoring state"
                await self._restore(entry, str(restore["sha256"]))
                copy.detail = "state restored"
            if entry.phase is ReplicaPhase.STAGE or not self._fresh:
                if not copy.started:
                    copy.state = CopyState.STAGED
                    copy.detail = (
                        "staged"
                        if self._fresh
                        else "staged; waits for the control plane to confirm it"
                    )
                return
            if copy.spec is None or copy.spec_for != entry:
                copy.spec, copy.spec_for = self._spec(copy), entry
            await self._supervisor.ensure(copy.spec)
            copy.started = True
            copy.failures = 0
        except (ReleaseRefused, InvalidInput) as e:
            self._failed(copy, CopyState.FAILED, e.message)
        except (Unavailable, ApiError) as e:
            self._failed(copy, copy.state, f"retrying: {e.message}")

    def _failed(self, copy: _Copy, state: CopyState, detail: str) -> None:
        delay_s = min(self._max_backoff_s, RETRY_MIN_S * 2 ** min(copy.failures, 10))
        copy.failures += 1
        copy.retry_at_s = self._clock.monotonic() + delay_s
        if not copy.started:
            copy.state = state
        copy.detail = detail[:500]
        log.warning("workload copy not ready", extra={
            "workload": copy.entry.workload, "replica": copy.entry.replica,
            "detail": copy.detail, "retry_in_s": round(delay_s, 1)})  # fmt: skip

    def _refresh_statuses(self) -> None:
        for key, copy in self._copies.items():
            if not copy.started:
                continue
            try:
                status = self._supervisor.status(service_name(*key))
            except NotFound:
                copy.started = False
                continue
            copy.state = CopyState(status.state.value)
            copy.health = status.last_health.health.value
            if copy.spec is not None and copy.spec.health is None:
                # Without a health check, a running process is all there is to know.
                copy.health = "ok" if copy.state is CopyState.RUNNING else "unknown"
            copy.restarts = status.restarts
            copy.detail = status.detail

    # -- one replica's process -----------------------------------------------------------

    def _spec(self, copy: _Copy) -> ServiceSpec:
        from edgefleet.core.workloads.workload import parse_workload

        entry, releases = copy.entry, copy.releases or []
        spec = parse_workload(dict(entry.document))
        files = {name: str(r.path_of(name)) for r in releases for name in r.files}
        manifest = _service_manifest(releases)
        if manifest is None:
            raise InvalidInput(f"workload {spec.name}: none of its releases carries a signed "
                               "service manifest; nothing to run")  # fmt: skip
        # Checked here again: the device runs only what the signed manifest allows,
        # whatever the control plane accepted.
        parameters = resolve_parameters(manifest, spec.parameters)
        copy.port = self._port(entry, spec, manifest)
        state_dir = self.state_dir(entry.workload)
        slot = str(releases[0].directory)

        def expand(word: str) -> str:
            return expand_placeholders(word, sys.executable, slot, files, copy.port,
                                       str(state_dir), parameters)  # fmt: skip

        env = {k: expand(v) for k, v in manifest.env.items()}
        env.update({
            "EDGEFLEET_WORKLOAD": spec.name, "EDGEFLEET_REPLICA": str(entry.replica),
            "EDGEFLEET_GENERATION": str(entry.generation), "EDGEFLEET_STATE_DIR": str(state_dir),
        })  # fmt: skip
        for name, path in files.items():
            env[f"EDGEFLEET_ARTIFACT_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}"] = path
        models = sorted(str(r.path_of(n)) for r in releases
                        for n, kind in r.kinds.items() if kind == "onnx-model")  # fmt: skip
        if models:
            env["EDGEFLEET_MODEL_PATH"] = models[0]
        if copy.port is not None:
            env["EDGEFLEET_SERVICE_PORT"] = str(copy.port)
        statsd = self._statsd_address()
        if statsd:
            env.setdefault("EDGEFLEET_STATSD", statsd)
        for key, value in otlp_env(self._otlp_address()).items():
            env.setdefault(key, value)
        return ServiceSpec(
            name=service_name(entry.workload, entry.replica),
            command=tuple(expand(w) for w in manifest.command),
            env=env,
            cwd=state_dir,
            log_path=self._logs / f"workload-{entry.workload}-{entry.replica}.log",
            health=_health(spec, manifest, copy.port, expand),
            memory_limit_mb=spec.resources.memory_mb,
        )

    def state_dir(self, workload: str) -> Path:
        path = self._root / "state" / workload
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _port(self, entry: ReplicaEntry, spec: Workload, manifest: ServiceManifest) -> int | None:
        auto = spec.auto_port or (spec.service_port is None and manifest.auto_port)
        if not auto:
            return spec.service_port if spec.service_port is not None else manifest.port
        key = _key(entry)
        port = self._persisted.ports.get(key)
        if port is None:
            port = self._persisted.ports[key] = pick_free_port()
            self._save()
        return port

    # -- state: checkpoint and restore ---------------------------------------------------

    async def _checkpoint(self, entry: ReplicaEntry, migration: str) -> CheckpointReport | None:
        """Archive the replica's state directory and upload it; the report entry, or None
        to try again on the next pass (the control plane is unreachable)."""
        copy = self._copies.get(entry.key)
        if copy is not None and copy.started and copy.port is not None:
            await _checkpoint_hook(self._supervisor.http, copy.port)
        archive = self._root / "checkpoints" / f"{migration}.tar.gz"
        try:
            sha256, size = await asyncio.to_thread(
                archive_state, self.state_dir(entry.workload), archive
            )
            key = self._sealing_key()
            if key is None:
                data = await asyncio.to_thread(archive.read_bytes)
                await self._link.upload_checkpoint(sha256, data)
            else:
                data = await asyncio.to_thread(_sealed, archive, key, self._link.device_id)
                await self._link.upload_checkpoint(sha256, data, SEALED_ARCHIVE_CONTENT_TYPE)
        except Unavailable as e:
            log.warning("checkpoint upload failed; will retry", extra={"error": e.message})
            return None
        except (ApiError, OSError) as e:
            log.warning("checkpoint failed", extra={"migration": migration, "error": str(e)})
            return CheckpointReport(migration=migration, error=str(e)[:500])
        finally:
            archive.unlink(missing_ok=True)
        log.info(
            "checkpoint uploaded",
            extra={"migration": migration, "sha256": sha256, "size_bytes": size},
        )
        return CheckpointReport(migration=migration, sha256=sha256, size_bytes=size)

    async def _restore(self, entry: ReplicaEntry, sha256: str) -> None:
        part = self._root / "restore" / f"{sha256}.part"
        part.parent.mkdir(parents=True, exist_ok=True)
        await self._link.download_blob(sha256, part)
        try:
            await asyncio.to_thread(restore_state, part, sha256, self.state_dir(entry.workload))
        finally:
            part.unlink(missing_ok=True)
        self._persisted.restored[_key(entry)] = sha256
        self._save()
        log.info(
            "state restored",
            extra={"workload": entry.workload, "replica": entry.replica, "sha256": sha256},
        )

    # -- bookkeeping ---------------------------------------------------------------------

    def _copy_report(self, copy: _Copy) -> ReplicaStatus:
        entry = copy.entry
        return ReplicaStatus(
            workload=entry.workload,
            replica=entry.replica,
            generation=entry.generation,
            phase=ReplicaPhaseName(entry.phase.value),
            state=ReplicaState(copy.state.value),
            health=ReplicaHealth(copy.health if copy.started else "unknown"),
            restarts=copy.restarts,
            port=copy.port,
            detail=copy.detail[:500],
            restored_sha256=self._persisted.restored.get(_key(entry)),
            migration=entry.migration,
        )

    def _load(self) -> _Persisted:
        try:
            raw = json.loads((self._root / RUNNER_FILE).read_text())
            return _Persisted(dict(raw.get("ports", {})), dict(raw.get("restored", {})))
        except (OSError, ValueError, AttributeError):
            return _Persisted()

    def _save(self) -> None:
        write_json_atomically(self._root / RUNNER_FILE, {
            "ports": self._persisted.ports, "restored": self._persisted.restored})  # fmt: skip


def _key(entry: ReplicaEntry) -> str:
    return f"{entry.workload}/{entry.replica}@{entry.generation}"


def _service_manifest(releases: list[FetchedRelease]) -> ServiceManifest | None:
    """The first service manifest among the releases (read when each was fetched)."""
    for release in releases:
        if release.service is not None:
            return parse_service_manifest(release.service)
    return None


def _health(
    spec: Workload,
    manifest: ServiceManifest,
    port: int | None,
    expand: Callable[[str], str],
) -> HealthCheckSpec | None:
    """The signed manifest's check; a workload's `health_check` may set how often and,
    for an HTTP check, which path, never a command."""
    check, criteria = spec.health_check, manifest.health
    http_path = check.http_path if check is not None and check.http_path else criteria.http_path
    timing: dict[str, Any] = (
        {"interval_s": check.interval_s, "timeout_s": check.timeout_s,
         "failure_threshold": check.failure_threshold}
        if check is not None
        else {"interval_s": criteria.interval_s, "timeout_s": max(1.0, criteria.interval_s)}
    )  # fmt: skip
    if http_path is not None:
        if port is None:
            raise InvalidInput(f"workload {spec.name}: an HTTP health check needs a port")
        return HealthCheckSpec(http_url=f"http://127.0.0.1:{port}{http_path}",
                               restart_on_failure=True, **timing)  # fmt: skip
    if criteria.command:
        return HealthCheckSpec(command=tuple(expand(w) for w in criteria.command),
                               restart_on_failure=True, **timing)  # fmt: skip
    return None


def _sealed(archive: Path, key: bytes, device_id: str) -> bytes:
    """The archive sealed to the ingest public key `key`, read in chunks."""
    with archive.open("rb") as file:
        pieces = iter(lambda: file.read(CHUNK_BYTES), b"")
        return b"".join(seal_stream(key, device_id, pieces))


async def _checkpoint_hook(http: LocalHttp, port: int) -> None:
    """Ask the running copy to write its state out; whatever it answers, go on."""
    try:
        response = await http.post(f"http://127.0.0.1:{port}/checkpoint",
                                   timeout_s=HOOK_TIMEOUT_S)  # fmt: skip
        log.info("checkpoint hook answered", extra={"status": response.status})
    except Unavailable as e:
        log.info("checkpoint hook unavailable; archiving as is", extra={"error": e.message})
