"""The agent's main loop: enroll once, then heartbeat and follow the desired state.

    start ─▶ enrolled? ──no──▶ enroll ─┐
               │yes                   │
               ▼                      ▼
          first heartbeat ──403 pending/rejected/revoked──▶ back off (exp. + jitter) ─┐
               │ok                                                                   │
               ▼                                                                     │
     heartbeat loop ∥ desired-state long poll ──any failure──▶ back off ─────────────┘

Every decision about timing comes from edgefleet.core.backoff; everything the agent knows
survives restarts in AgentState.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from edgefleet.agent.attestation import Attestor
from edgefleet.agent.certificates import DeviceCertificates
from edgefleet.agent.desired_check import DesiredStateCheck
from edgefleet.agent.hardware import Hardware
from edgefleet.agent.install_helper import ChildProcessHelper, InstallHelper
from edgefleet.agent.installer import Installer
from edgefleet.agent.link import ControlPlaneLink
from edgefleet.agent.node_status import NodeStatus
from edgefleet.agent.process_runtime import Runtime
from edgefleet.agent.settings import AgentSettings
from edgefleet.agent.state import KEY_FILE, AgentState
from edgefleet.agent.supervisor import Supervisor
from edgefleet.agent.telemetry.pipeline import HostReader, TelemetryPipeline
from edgefleet.agent.training_helper import TrainingRunner
from edgefleet.agent.workload_runner import WorkloadRunner
from edgefleet.clock import Clock
from edgefleet.core.backoff import backoff_delay_s, jittered_interval_s
from edgefleet.core.protocol import Inventory, Report, from_dict, to_dict
from edgefleet.errors import ApiError, EdgefleetError, SettingsError, Unavailable
from edgefleet.security.desired_signature import DesiredStateRefused
from edgefleet.security.keys import DeviceKey
from edgefleet.transport.messages import Transport

if TYPE_CHECKING:
    from edgefleet.agent.mqtt_link import MessageSequence, MqttChannel, TelemetryOverMqtt
    from edgefleet.transport.http_client import ClientCertificate, LocalHttp
    from edgefleet.transport.mqtt_client import BrokerUrl

log = logging.getLogger(__name__)

HEARTBEAT_JITTER = 0.1
# A heartbeat carries the inventory (~350 bytes of JSON) only when it changed since the last
# one the control plane took, and at least this often in case the server lost it (a restored
# backup): an unchanged inventory is most of a heartbeat's body, 240 times an hour. Only a
# server that answered a report carrying it with `inventory_optional` (older ones need it
# every time) is sent reports without it.
INVENTORY_REFRESH_S = 3600.0
_NOT_APPROVED = {"device_pending", "device_rejected", "device_revoked"}


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        clock: Clock,
        transport: Transport,
        hardware: Hardware,
        runtime: Runtime,
        rng: random.Random | None = None,
        host_metrics: HostReader | None = None,
        probe_client: LocalHttp | None = None,
        install_helper: InstallHelper | None = None,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        """`host_metrics` reads the host for telemetry and `probe_client` carries the
        supervisor's HTTP health probes and the workloads' checkpoint hooks; both default to
        the real machine (the simulator injects its own, beside its Hardware and Runtime).
        `install_helper` verifies release metadata and applies deltas for the installer and
        the workloads' release cache: a short-lived child process per job unless given (the
        simulator runs them in process). `client_certificate`: where the https transport
        finds the device certificate that `settings.device_certificate` keeps."""
        self.settings = settings
        self._clock = clock
        self._transport = transport
        self._hardware = hardware
        self._rng = rng or random.Random()
        self._reported_inventory: dict[str, Any] | None = None  # as the server last took it
        self._inventory_due_s = 0.0  # monotonic time by which to send it again regardless
        self._inventory_optional = False  # the server said reports may leave it out
        self._data_dir = settings.data_dir
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._key = DeviceKey.load_or_create(self._data_dir / KEY_FILE)
        # On MQTT, telemetry uploads leave the HTTP transport while the channel is open.
        self._telemetry_route: TelemetryOverMqtt | None = None
        if settings.mqtt_url:
            # The MQTT channel (paho-mqtt with it, ~1.4 MB of an idle agent's RSS) is
            # imported only by an agent that uses it.
            from edgefleet.agent.mqtt_link import TelemetryOverMqtt

            self._telemetry_route = TelemetryOverMqtt(transport)
        self.link = ControlPlaneLink(self._telemetry_route or transport, self._key, clock)
        self.training = TrainingRunner(lambda: self.device_id, self.link.exchange,
                                       self._data_dir / "training")  # fmt: skip
        self.certificates = (
            DeviceCertificates(self._data_dir, self.link, self._key, clock, client_certificate)
            if settings.device_certificate
            else None
        )
        self.state = AgentState.load(self._data_dir)
        if self.state.device_id not in (None, self.link.device_id):
            raise SettingsError(
                f"agent state in {self._data_dir} belongs to device {self.state.device_id}, "
                f"but the key there is device {self.link.device_id}"
            )
        self._heartbeat_interval_s = float(
            self.state.desired.get("agent", {}).get(
                "heartbeat_interval_s", settings.heartbeat_interval_s
            )
        )
        self._report_now = asyncio.Event()
        self._desired_confirmed = False
        self._failures = 0
        self.last_error: str | None = None
        self._runtime = runtime
        self.supervisor = Supervisor(runtime, clock, self._rng, http_client=probe_client)
        helper = install_helper or ChildProcessHelper()
        self.installer = Installer(
            self._data_dir,
            self.link,
            clock,
            self.supervisor,
            inventory=self._inventory,
            labels=lambda: dict(self.state.desired.get("labels", settings.labels)),
            on_change=self._report_now.set,
            statsd_address=lambda: self.telemetry.statsd_address,
            otlp_address=lambda: self.telemetry.otlp_address,
            sandbox_memory_limit_mb=settings.sandbox_memory_limit_mb,
            sandbox_timeout_s=settings.sandbox_timeout_s,
            max_backoff_s=settings.max_backoff_s,
            durable=hardware.durable,
            rng=self._rng,
            sandbox_runtime=runtime,
            helper=helper,
        )
        self.telemetry = TelemetryPipeline(
            settings,
            self.link,
            clock,
            lambda: self.state.enrollment == "approved",
            self._rng,
            host=host_metrics,
        )
        self.telemetry.apply(self.state.desired.get("telemetry"))
        self.workloads = WorkloadRunner(
            self._data_dir,
            self.link,
            clock,
            self.supervisor,
            inventory=self._inventory,
            labels=lambda: dict(self.state.desired.get("labels", settings.labels)),
            on_change=self._report_now.set,
            statsd_address=lambda: self.telemetry.statsd_address,
            otlp_address=lambda: self.telemetry.otlp_address,
            max_backoff_s=settings.max_backoff_s,
            helper=helper,
            sealing_key=lambda: self.telemetry.sealing.public_key,
        )
        self.node_status = NodeStatus(clock, settings.advertise_address,
                                      settings.simulated_battery)  # fmt: skip
        self._desired_check = DesiredStateCheck(
            self.installer.tuf_dir, helper, self.link.fetch, clock, lambda: self.device_id
        )
        self._mqtt_url: BrokerUrl | None = None
        self._mqtt_sequence: MessageSequence | None = None
        if settings.mqtt_url:
            from edgefleet.agent.mqtt_link import SEQUENCE_FILE, MessageSequence
            from edgefleet.transport.mqtt_client import BrokerUrl

            self._mqtt_url = BrokerUrl.parse(settings.mqtt_url)
            self._mqtt_sequence = MessageSequence(self._data_dir / SEQUENCE_FILE)
        self.attestation = (
            Attestor(settings, self.link, clock, self.installer.slots.root, self._rng)
            if settings.attestation_interval_s > 0
            else None
        )

    @property
    def device_id(self) -> str:
        return self.link.device_id

    def _log_extra(self, **fields: Any) -> dict[str, Any]:
        return {"device_id": self.device_id, **fields}

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; never raises for server or network trouble.

        The installer runs beside the connection: a health window or a rollback finishes
        even while the control plane is unreachable. Every wait on the link races `stop`,
        so a dead link does not hold a stop up for a request's timeout. Telemetry stops
        last: the services first, then the pipeline cuts everything they sent into the
        on-disk queue.
        """
        await self.telemetry.start()  # before the installer starts a service that uses it
        telemetry_stop = asyncio.Event()
        telemetry = asyncio.create_task(self.telemetry.run(telemetry_stop))
        self.installer.want(
            self.state.desired.get("release"), authoritative=self.state.applied_generation > 0
        )
        installing = asyncio.create_task(self.installer.run())
        # Replicas start only once the control plane confirms them (fencing on return).
        self.workloads.want(self.state.desired.get("workloads"), fresh=False)
        running_workloads = asyncio.create_task(self.workloads.run())
        try:
            while not stop.is_set():
                try:
                    await self._until_stopped(self._connect(), stop)
                except (ApiError, Unavailable) as e:
                    await self._back_off(e, stop)
                if installing.done():
                    installing.result()  # an installer bug must not go unnoticed
                if telemetry.done():
                    telemetry.result()
                if running_workloads.done():
                    running_workloads.result()
        finally:
            installing.cancel()
            running_workloads.cancel()
            await asyncio.gather(installing, running_workloads, return_exceptions=True)
            await self.training.stop()
            await self.supervisor.aclose()
            await self._runtime.close()
            telemetry_stop.set()  # what the stopped services measured goes into the queue
            await asyncio.gather(telemetry, return_exceptions=True)
            await self._transport.close()

    @staticmethod
    async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
        """Run `work` until it returns or raises, or until `stop` is set (it is cancelled)."""
        working = asyncio.create_task(work)
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            working.cancel()
            stopping.cancel()
            await asyncio.gather(working, stopping, return_exceptions=True)
        if not working.cancelled():
            working.result()  # re-raise its failure

    async def _connect(self) -> None:
        """Enroll if needed, then stay connected until a failure."""
        if self.state.device_id is None:
            await self._enroll()
        await self._connected()

    async def _enroll(self) -> None:
        token = self.settings.enroll_token
        if not token:
            raise SettingsError(
                "this agent is not enrolled yet: pass --enroll-token (or EDGEFLEET_ENROLL_TOKEN)"
            )
        answer = await self.link.enroll(
            token,
            self.settings.name,
            dict(self.settings.labels),
            from_dict(Inventory, self._inventory()),
            self.settings.heartbeat_interval_s,
        )
        root = answer.trusted_root
        pinned = self._pinned_root()
        if root or pinned:
            await self.installer.pin_enrollment_root(
                json.dumps(root).encode() if root else None, pinned=pinned,
                rotations=[json.dumps(r).encode() for r in answer.root_rotations],
            )  # fmt: skip
        self.state = replace(
            self.state,
            server_url=self.settings.server_url,
            device_id=answer.device_id,
            enrollment=answer.enrollment.value,
        )
        self.state.save(self._data_dir)
        self._heartbeat_interval_s = answer.heartbeat_interval_s
        log.info("enrolled", extra=self._log_extra(enrollment=answer.enrollment.value))

    def _pinned_root(self) -> bytes | None:
        """The root pinned out of band (--root-file), which the enrollment root must be or
        chain from; None when the agent takes the root it is handed."""
        if self.settings.root_file is None:
            return None
        try:
            return self.settings.root_file.read_bytes()
        except OSError as e:
            raise SettingsError(
                f"bad setting root_file (--root-file / EDGEFLEET_ROOT_FILE): "
                f"{e.strerror}: {self.settings.root_file}"
            ) from None

    async def _connected(self) -> None:
        await self._heartbeat_once()
        if self.state.enrollment != "approved":
            self.state = replace(self.state, enrollment="approved")
            self.state.save(self._data_dir)
            log.info("device approved; following desired state", extra=self._log_extra())
        if self._mqtt_url is not None:
            tasks = [asyncio.create_task(self._mqtt_session(self._mqtt_url))]
        else:
            tasks = [
                asyncio.create_task(self._heartbeat_loop(self._heartbeat_once)),
                asyncio.create_task(self._desired_loop()),
            ]
        if self.attestation is not None:
            tasks.append(asyncio.create_task(self.attestation.run()))
        if self.certificates is not None:
            tasks.append(asyncio.create_task(self.certificates.run()))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise a loop's failure
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _heartbeat_once(self, *, scheduled: bool = False) -> None:
        """Report now; `scheduled` when this is the periodic heartbeat (the control plane's
        failure detector learns the schedule's intervals only)."""
        inventory = self._inventory()
        now_s = self._clock.monotonic()
        send_inventory = (
            not self._inventory_optional
            or inventory != self._reported_inventory
            or now_s >= self._inventory_due_s
        )
        answer = await self.link.report(
            self._report_message(scheduled, inventory if send_inventory else None)
        )
        if send_inventory:
            self._reported_inventory = inventory
            self._inventory_due_s = now_s + INVENTORY_REFRESH_S
            self._inventory_optional = answer.inventory_optional is True
        self._heartbeat_interval_s = answer.heartbeat_interval_s
        self._failures = 0
        self.last_error = None

    async def _mqtt_session(self, url: BrokerUrl) -> None:
        """Follow the desired state pushed over MQTT and report over it, until the
        connection is lost (Unavailable: the caller backs off and connects again)."""
        from edgefleet.agent.mqtt_link import MqttChannel

        assert self._mqtt_sequence is not None  # set with the URL
        channel = MqttChannel(url, self.link, self._key, self._clock, self._mqtt_sequence,
                              self.settings.mqtt_ca_file)  # fmt: skip
        try:
            await channel.open()
            if self._telemetry_route is not None:
                self._telemetry_route.channel = channel

            async def report(scheduled: bool) -> None:
                await self._report_over(channel, scheduled=scheduled)

            loops = [
                asyncio.create_task(self._heartbeat_loop(report)),
                asyncio.create_task(self._pushed_desired_loop(channel)),
            ]
            lost = asyncio.create_task(channel.lost())
            try:
                done, _ = await asyncio.wait([*loops, lost], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is lost:
                        raise Unavailable(f"MQTT device channel {task.result()}")
                    task.result()
            finally:
                for task in [*loops, lost]:
                    task.cancel()
                await asyncio.gather(*loops, lost, return_exceptions=True)
        finally:
            if self._telemetry_route is not None:
                self._telemetry_route.channel = None
            await channel.close()

    async def _report_over(self, channel: MqttChannel, *, scheduled: bool) -> None:
        """A report published on MQTT: no answer comes back, the desired state carries the
        heartbeat interval, and the inventory goes only when it changed (or hourly)."""
        inventory = self._inventory()
        now_s = self._clock.monotonic()
        send_inventory = inventory != self._reported_inventory or now_s >= self._inventory_due_s
        report = self._report_message(scheduled, inventory if send_inventory else None)
        await channel.report(to_dict(report))
        if send_inventory:
            self._reported_inventory = inventory
            self._inventory_due_s = now_s + INVENTORY_REFRESH_S
        self._failures = 0
        self.last_error = None

    async def _pushed_desired_loop(self, channel: MqttChannel) -> None:
        while True:
            signed = await channel.desired()
            try:
                document = await self._desired_check.verified(
                    signed, self.state.applied_generation if self.state.desired else 0
                )
            except DesiredStateRefused as e:
                # Keep following what was verified before; the next push may do better.
                self.last_error = f"{e.code}: {e.message}"
                log.warning("desired state refused", extra=self._log_extra(
                    code=e.code, reason=e.message))  # fmt: skip
                continue
            if self._desired_confirmed and document["generation"] == self.state.applied_generation:
                continue  # the same document again (a republish)
            self._desired_confirmed = True
            self._apply(document)

    async def _heartbeat_loop(self, report: Callable[..., Awaitable[None]]) -> None:
        while True:
            delay = jittered_interval_s(self._heartbeat_interval_s, HEARTBEAT_JITTER, self._rng)
            await self._clock.pause(delay, self._report_now)
            asked = self._report_now.is_set()
            self._report_now.clear()
            await report(scheduled=not asked)

    async def _desired_loop(self) -> None:
        while True:
            # The first document after a start is fetched even if unchanged: it confirms
            # which workload replicas this device still owns.
            fresh = self.state.desired and self._desired_confirmed
            known = self.state.applied_generation if fresh else None
            signed = await self.link.desired(known, self.settings.long_poll_s)
            if signed is None:
                self._desired_confirmed = True
                continue
            try:
                document = await self._desired_check.verified(
                    signed, self.state.applied_generation if self.state.desired else 0
                )
            except DesiredStateRefused as e:
                # Keep following what was verified before; ask again after a pause.
                self.last_error = f"{e.code}: {e.message}"
                log.warning("desired state refused", extra=self._log_extra(
                    code=e.code, reason=e.message))  # fmt: skip
                await self._clock.sleep(self.settings.min_backoff_s)
                continue
            self._desired_confirmed = True
            self._apply(document)

    def _apply(self, document: dict[str, Any]) -> None:
        """Converge to `document` and record it as applied (atomically, on disk)."""
        agent_settings = document.get("agent", {})
        self._heartbeat_interval_s = float(
            agent_settings.get("heartbeat_interval_s", self._heartbeat_interval_s)
        )
        self.state = replace(
            self.state, applied_generation=int(document["generation"]), desired=document
        )
        self.state.save(self._data_dir)
        self.installer.want(document.get("release"))
        self.telemetry.apply(document.get("telemetry"))
        self.workloads.want(document.get("workloads"), fresh=True)
        self.training.want(document.get("training"))
        self._report_now.set()
        log.info("applied desired state", extra=self._log_extra(generation=document["generation"]))

    def _report_message(self, scheduled: bool, inventory: dict[str, Any] | None) -> Report:
        """This device's report now (`inventory` None: left out, unchanged)."""
        return Report(
            applied_generation=self.state.applied_generation,
            release=self.installer.report(),
            inventory=None if inventory is None else from_dict(Inventory, inventory),
            workloads=self.workloads.report(),
            node=self.node_status.report(scheduled=scheduled),
        )

    def _inventory(self) -> dict[str, Any]:
        return {**self._hardware.inventory(), "location": self.settings.location()}

    async def _back_off(self, error: EdgefleetError, stop: asyncio.Event) -> None:
        code = error.code
        if code == "unknown_device":
            # The control plane has no record of us (e.g. its data was reset): enroll again,
            # and count its generations afresh.
            self.state = replace(self.state, device_id=None, enrollment=None, applied_generation=0)
            self.state.save(self._data_dir)
        if code in _NOT_APPROVED and self.state.enrollment != code.removeprefix("device_"):
            self.state = replace(self.state, enrollment=code.removeprefix("device_"))
            self.state.save(self._data_dir)
        delay = backoff_delay_s(
            self._failures, self.settings.min_backoff_s, self.settings.max_backoff_s, self._rng
        )
        self._failures += 1
        self.last_error = f"{code}: {error.message}"
        level = logging.INFO if code in _NOT_APPROVED else logging.WARNING
        log.log(level, error.message, extra=self._log_extra(code=code, retry_in_s=round(delay, 2)))
        await self._clock.pause(delay, stop)
