"""The installer: gets the assigned release onto this device safely.

    verify TUF metadata ─▶ check compatibility ─▶ download (nothing for a file a slot
      already holds, as on a rollback to the standby slot; else a delta against the live
      file when the server has one, else the full file, resumable) + verify hashes
      ─▶ fill the standby slot ─▶ sandbox-check the models ─▶ [staged: wait if stage-only]
      ─▶ switch slots (atomic) ─▶ restart the service ─▶ health window ─▶ installed
                                                               └──unhealthy──▶ rolled back

Every state is journaled before it is acted on (agent/journal.py); after a crash the
installer resumes from the journal with `core.install.resume_action`, so the device always
ends on a working slot. Failures before the switch leave the live slot untouched
(`failed`); an assignment that failed or rolled back is not retried until the operator
assigns again (a new serial).

Verifying metadata and applying deltas run in the install helper (`install_helper.py`): by
default a short-lived child process per job, so python-tuf, cryptography and numpy never
stay in the agent; the simulator passes an `InProcessHelper`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgefleet.agent.delivery import Delivery
from edgefleet.agent.install_helper import ChildProcessHelper, InstallHelper
from edgefleet.agent.journal import InstallRecord, Journal
from edgefleet.agent.link import ControlPlaneLink
from edgefleet.agent.process_runtime import Runtime
from edgefleet.agent.release_service import (
    SERVICE_NAME,
    manifest_of,
    pick_free_port,
    service_spec,
)
from edgefleet.agent.release_verification import ReleaseRefused, VerifiedFile, verified_targets
from edgefleet.agent.sandbox import check_models
from edgefleet.agent.slots import SlotName, Slots
from edgefleet.agent.supervisor import HealthState, Supervisor
from edgefleet.clock import Clock
from edgefleet.core.backoff import backoff_delay_s
from edgefleet.core.protocol import ActiveRelease, ReleaseStatus
from edgefleet.core.updates.install import (
    HealthSample,
    HealthVerdictState,
    InstallState,
    ResumeAction,
    judge_health,
    resume_action,
    transition,
)
from edgefleet.core.updates.service_manifest import (
    HealthCriteria,
    parse_service_manifest,
    resolve_parameters,
)
from edgefleet.errors import ApiError, EdgefleetError, InvalidInput, Unavailable

log = logging.getLogger(__name__)


class InstallFailed(EdgefleetError):
    """The release cannot be installed on this device; the reason is reported."""

    code = "install_failed"


class Installer:
    def __init__(
        self,
        data_dir: Path,
        link: ControlPlaneLink,
        clock: Clock,
        supervisor: Supervisor,
        inventory: Callable[[], Mapping[str, Any]],
        labels: Callable[[], Mapping[str, str]],
        *,
        on_change: Callable[[], None] = lambda: None,
        statsd_address: Callable[[], str | None] = lambda: None,
        otlp_address: Callable[[], str | None] = lambda: None,
        sandbox_memory_limit_mb: int = 1024,
        sandbox_timeout_s: float = 60.0,
        max_backoff_s: float = 60.0,
        durable: Callable[[str], None] = lambda _moment: None,
        rng: random.Random | None = None,
        sandbox_runtime: Runtime | None = None,
        helper: InstallHelper | None = None,
    ) -> None:
        """`helper` runs metadata checks and deltas: a child process per job unless given
        (the simulator passes an `InProcessHelper`). `durable` hears `install:<state>` each
        time a step is journaled (the Hardware seam, where a simulation may lose power)."""
        self.slots = Slots(data_dir / "release")
        self.journal = Journal(data_dir / "release" / "journal.json")
        self._helper = helper or ChildProcessHelper()
        self._delivery = Delivery(data_dir / "downloads", link, clock, self._helper)
        self._logs = data_dir / "logs"
        self._tuf_dir = data_dir / "tuf"
        self._tuf_dir.mkdir(parents=True, exist_ok=True)
        self._link = link
        self._clock = clock
        self._supervisor = supervisor
        self._inventory = inventory
        self._labels = labels
        self._on_change = on_change
        self._statsd_address = statsd_address
        self._otlp_address = otlp_address
        self._sandbox_memory_limit_mb = sandbox_memory_limit_mb
        self._sandbox_timeout_s = sandbox_timeout_s
        self._max_backoff_s = max_backoff_s
        self._durable = durable
        self._rng = rng or random.Random()
        self._sandbox_runtime = sandbox_runtime
        self.record = self.journal.load()
        self._wanted: dict[str, Any] | None = None
        self._remove_unwanted = False
        self._changed = asyncio.Event()
        self._failures = 0

    # What the agent sees.

    def want(self, section: Mapping[str, Any] | None, *, authoritative: bool = True) -> None:
        """The release section of the latest desired state. None from the control plane
        (`authoritative`) means no release: the one running is stopped and removed (a
        rollout rolling back a device that had none before). Not authoritative: nothing
        is known yet (before the first desired state), so nothing is removed."""
        self._wanted = dict(section) if section else None
        self._remove_unwanted = authoritative
        self._changed.set()

    def report(self) -> ReleaseStatus | None:
        """The heartbeat's release status: what the installer does with its release."""
        record = self.record
        active = self.slots.manifest(self.slots.active())
        if record is None:
            return None
        return ReleaseStatus(
            name=record.name,
            version=record.version,
            serial=record.serial,
            state=record.state,
            reason=record.reason[:1000],
            bytes_done=record.bytes_done,
            bytes_total=record.bytes_total,
            bytes_saved=record.bytes_saved,
            active=_active(active),
        )

    async def run(self) -> None:
        """Start the live slot's service, then follow `want()` forever."""
        await self._start_service(self.slots.active())
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._reconcile(self._wanted)
                self._failures = 0
            except (Unavailable, ApiError) as e:
                # Transient: keep the journaled state (downloads resume) and retry.
                delay = backoff_delay_s(self._failures, 1.0, self._max_backoff_s, self._rng)
                self._failures += 1
                self._note(f"retrying in {delay:.0f}s: {e.message}")
                log.warning(
                    "install step failed; will retry",
                    extra={"error": e.message, "retry_in_s": round(delay, 1)},
                )
                await self._clock.sleep(delay)
                self._changed.set()

    async def stop(self) -> None:
        await self._supervisor.stop_all()

    @property
    def tuf_dir(self) -> Path:
        """python-tuf's metadata directory, anchored in the root pinned at enrollment."""
        return self._tuf_dir

    async def pin_enrollment_root(
        self, root: bytes | None, *, pinned: bytes | None = None, rotations: Sequence[bytes] = ()
    ) -> None:
        """Keep the TUF root received at enrollment as this device's trust anchor (through
        the helper: python-tuf parses it), checked against the root pinned out of band if
        there is one (Unauthenticated `tuf_root_not_pinned`). Conflict if another root is
        pinned already."""
        await self._helper.pin_root(self._tuf_dir, root, pinned=pinned, rotations=rotations)

    # The state machine.

    async def _reconcile(self, section: dict[str, Any] | None) -> None:
        record = self.record
        if record is not None and record.state in (
            InstallState.INSTALLING,
            InstallState.HEALTH_CHECK,
        ):
            # A switch was interrupted: settle it before anything else.
            action = resume_action(record.state, False, record.health_attempts)
            if action is ResumeAction.ROLL_BACK:
                await self._roll_back("the agent was restarted repeatedly during the health window")
            else:
                await self._switch_in()
            record = self.record
        if section is None:
            if self._remove_unwanted:
                await self._remove()
            return
        same = (
            record is not None
            and record.serial == section["serial"]
            and (record.name, record.version) == (section["name"], section["version"])
        )
        if not same:
            await self._deliver(section)
        else:
            assert record is not None
            action = resume_action(record.state, section["stage_only"], record.health_attempts)
            if action is ResumeAction.RESTART_DELIVERY:
                await self._deliver(section)
            elif action is ResumeAction.NOTHING or action is ResumeAction.WAIT_FOR_ACTIVATION:
                return
        record = self.record
        assert record is not None
        if record.state is InstallState.STAGED and not section["stage_only"]:
            await self._switch_in()

    async def _deliver(self, section: dict[str, Any]) -> None:
        self._save(
            InstallRecord(
                section["name"],
                section["version"],
                section["serial"],
                InstallState.DOWNLOADING,
                section["stage_only"],
            )
        )
        try:
            infos = await self._verified_targets(section)
            await self._download(infos)
            self._move(InstallState.VERIFYING)
            slot = await self._fill_standby_slot(section, infos)
            self._move(InstallState.STAGED, slot=slot.value, reason="")
        except InstallFailed as e:
            self._move(InstallState.FAILED, reason=e.message)
            log.warning("install refused", extra={"release": section["name"], "reason": e.message})

    async def _verified_targets(self, section: dict[str, Any]) -> list[VerifiedFile]:
        """Signed facts for every file of the release, checked against this device."""
        try:
            return await verified_targets(
                self._helper, self._tuf_dir, self._link, section["name"], section["version"],
                [t["path"] for t in section["targets"]], self._inventory(), self._labels(),
            )  # fmt: skip
        except ReleaseRefused as e:
            raise InstallFailed(e.message) from None

    async def _download(self, infos: list[VerifiedFile]) -> None:
        self._update(bytes_total=sum(i.length_bytes for i in infos), bytes_done=0)
        try:
            saved = await self._delivery.fetch(
                infos, self._live_files(), self._progress, self._files_on_device()
            )
        except InvalidInput as e:
            raise InstallFailed(f"download refused: {e.message}") from None
        self._update(bytes_saved=saved)

    def _progress(self, bytes_done: int) -> None:
        self._update(bytes_done=bytes_done)

    def _live_files(self) -> dict[str, tuple[str, Path]]:
        """Artifact name -> (sha256, path) of the files in the live slot: delta bases."""
        slot = self.slots.active()
        manifest = self.slots.manifest(slot)
        if slot is None or manifest is None:
            return {}
        directory = self.slots.path(slot)
        shas = manifest.get("shas", {})
        return {
            name: (shas[name], directory / file)
            for name, file in manifest["files"].items()
            if name in shas
        }

    def _files_on_device(self) -> dict[str, Path]:
        """sha256 -> path of every file the two slots say they hold (a rollback finds its
        files in the standby slot); delivery verifies each before using it."""
        found: dict[str, Path] = {}
        for slot in (self.slots.active(), self.slots.standby()):
            manifest = self.slots.manifest(slot)
            if slot is None or manifest is None:
                continue
            shas = manifest.get("shas", {})
            for name, file in manifest.get("files", {}).items():
                if name in shas:
                    found[shas[name]] = self.slots.path(slot) / file
        return found

    async def _fill_standby_slot(
        self, section: dict[str, Any], infos: list[VerifiedFile]
    ) -> SlotName:
        slot = self.slots.standby()
        directory = self.slots.clear(slot)
        files: dict[str, str] = {}
        kinds: dict[str, str] = {}
        shas: dict[str, str] = {}
        for info in infos:
            shutil.copyfile(self._delivery.path(info.sha256), directory / info.file_name)
            files[info.artifact_name] = info.file_name
            kinds[info.artifact_name] = info.artifact_kind
            shas[info.artifact_name] = info.sha256
        models = [directory / files[n] for n, k in kinds.items() if k == "onnx-model"]
        verdict = await check_models(
            models,
            memory_limit_mb=self._sandbox_memory_limit_mb,
            timeout_s=self._sandbox_timeout_s,
            clock=self._clock,
            runtime=self._sandbox_runtime,
        )
        if not verdict.ok:
            raise InstallFailed(f"sandbox check failed: {verdict.reason}")
        service = None
        for name, kind in kinds.items():
            if kind == "service":
                try:
                    service = await self._helper.read_manifest(directory / files[name])
                    # Run as this device's release service, every parameter takes its
                    # default: one without is for workloads only.
                    resolve_parameters(parse_service_manifest(service), {})
                except InvalidInput as e:
                    raise InstallFailed(f"service manifest refused: {e.message}") from None
        port = pick_free_port() if service and service.get("port") == "auto" else None
        self.slots.write_manifest(
            slot,
            {
                "release": section["name"],
                "version": section["version"],
                "serial": section["serial"],
                "files": files,
                "kinds": kinds,
                "shas": shas,
                "service": service,
                "port": port,
            },
        )
        return slot

    async def _switch_in(self) -> None:
        record = self.record
        assert record is not None and record.slot is not None
        slot = SlotName(record.slot)
        if record.state is InstallState.STAGED:
            active = self.slots.active()
            record = self._move(
                InstallState.INSTALLING, previous_slot=active.value if active else None
            )
        # Count every attempt on disk first: a release that keeps killing the agent during
        # its health window is rolled back instead of retried forever.
        record = self._save(replace(record, health_attempts=record.health_attempts + 1))
        self.slots.switch_to(slot)
        await self._start_service(slot)
        if record.state is InstallState.INSTALLING:
            record = self._move(InstallState.HEALTH_CHECK)
        verdict_reason = await self._watch_health(slot)
        if verdict_reason is None:
            self._move(InstallState.INSTALLED, reason="")
            self._delivery.clean()
            log.info("release installed", extra={"release": record.name, "version": record.version})
        else:
            await self._roll_back(verdict_reason)

    async def _watch_health(self, slot: SlotName) -> str | None:
        """None when the health window passes, else why it failed."""
        manifest = manifest_of(self.slots.manifest(slot))
        if manifest is None:
            return None
        criteria: HealthCriteria = manifest.health
        if criteria.http_path is None and not criteria.command:
            return None
        started = self._clock.monotonic()
        samples: list[HealthSample] = []
        while True:
            status = self._supervisor.status(SERVICE_NAME)
            probe = await self._supervisor.probe(SERVICE_NAME)
            samples.append(
                HealthSample(
                    at_s=self._clock.monotonic() - started,
                    ok=probe.health is HealthState.OK,
                    detail=probe.detail,
                    requests=probe.requests,
                    errors=probe.errors,
                    restarts=status.restarts,
                    reached=probe.reached,
                )
            )
            verdict = judge_health(samples, criteria, 0.0, self._clock.monotonic() - started)
            if verdict.state is HealthVerdictState.HEALTHY:
                return None
            if verdict.state is HealthVerdictState.UNHEALTHY:
                return verdict.reason
            self._update(reason=verdict.reason)
            await self._clock.sleep(criteria.interval_s)

    async def _roll_back(self, reason: str) -> None:
        record = self.record
        assert record is not None
        previous = SlotName(record.previous_slot) if record.previous_slot else None
        if previous is not None:
            self.slots.switch_to(previous)
        await self._start_service(previous)
        self._move(InstallState.ROLLED_BACK, reason=reason)
        log.warning(
            "release rolled back",
            extra={"release": record.name, "version": record.version, "reason": reason},
        )

    async def _remove(self) -> None:
        """No release is assigned: stop the live one's service, then forget it (each step
        idempotent, so a kill in between ends the same way after a restart)."""
        if self.slots.active() is None and self.record is None:
            return
        removed = self.slots.manifest(self.slots.active()) or {}
        await self._start_service(None)
        self.slots.deactivate()
        self.journal.clear()
        self.record = None
        self._on_change()
        log.info(
            "release removed: the desired state assigns none",
            extra={"release": removed.get("release"), "version": removed.get("version")},
        )

    async def _start_service(self, slot: SlotName | None) -> None:
        slot_manifest = self.slots.manifest(slot)
        manifest = manifest_of(slot_manifest)
        if slot is None or manifest is None or slot_manifest is None:
            with contextlib.suppress(EdgefleetError):
                await self._supervisor.remove(SERVICE_NAME)
            return
        state_dir = self._logs.parent / "release-state"
        state_dir.mkdir(parents=True, exist_ok=True)
        spec = service_spec(
            manifest,
            self.slots.path(slot),
            slot_manifest,
            self._logs,
            self._statsd_address(),
            state_dir,
            self._otlp_address(),
        )
        await self._supervisor.ensure(spec)

    # Bookkeeping.

    def _save(self, record: InstallRecord) -> InstallRecord:
        self.record = self.journal.save(record)
        self._on_change()
        self._durable(f"install:{record.state.value}")
        return record

    def _move(self, state: InstallState, **changes: Any) -> InstallRecord:
        assert self.record is not None
        transition(self.record.state, state)
        return self._save(self.record.moved(state, **changes))

    def _update(self, **changes: Any) -> None:
        """Progress and notes: kept in memory and reported, journaled with the next move."""
        if self.record is not None:
            self.record = replace(self.record, **changes)

    def _note(self, reason: str) -> None:
        self._update(reason=reason)
        self._on_change()


def _active(slot_manifest: Mapping[str, Any] | None) -> ActiveRelease | None:
    """The live release as reported, with the port its service listens on."""
    if not slot_manifest:
        return None
    service = manifest_of(slot_manifest)
    port = None
    if service is not None:
        port = slot_manifest.get("port") if service.auto_port else service.port
    return ActiveRelease(name=slot_manifest["release"], version=slot_manifest["version"], port=port)
