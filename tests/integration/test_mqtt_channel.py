"""The MQTT device channel against a real Mosquitto (dynamic-security plugin, a TLS
listener with certificates made here), a real control plane started with --mqtt, and real
agents started with --mqtt: reports and telemetry stored, the desired state pushed (no long
poll), the retained document for a reconnecting device, forged, replayed and foreign
messages refused, a revoked device disconnected and refused by the broker, two replicas
splitting the messages, a killed control plane losing no QoS 1 message."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from edgefleet.client import FleetClient
from edgefleet.core.protocol import Report, to_binary
from edgefleet.errors import Forbidden, Unauthenticated
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.message_signing import sign_message
from edgefleet.server.services.broker_accounts import RESPONSE_TOPIC, BrokerAccounts
from edgefleet.transport.mqtt_client import BrokerUrl, MqttConnection, ReceivedMessage
from edgefleet.transport.mqtt_topics import Channel, device_topic
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice
from tests.integration.test_device_certificates import make_server_tls
from tests.mqtt_broker import ADMIN_PASSWORD, ADMIN_USER, BrokerProcess, require_mosquitto
from tests.telemetry_fleet import FAST_AGENT_ARGS, fast_policy

DESIRED_ROUTE = "/v1/devices/{device_id}/desired"
REPORT_ROUTE = "/v1/devices/{device_id}/report"
TELEMETRY_ROUTE = "/v1/devices/{device_id}/telemetry"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_server_tls(tmp_path_factory.mktemp("broker-tls"))


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, tls: tuple[Path, Path, Path]
) -> Iterator[BrokerProcess]:
    require_mosquitto()
    process = BrokerProcess(tmp_path_factory.mktemp("broker"), tls=tls)
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, broker: BrokerProcess
) -> Iterator[ServerProcess]:
    """A control plane on the broker, with a stable replica id (its MQTT session's name).
    Idle devices here report at their own interval as before (the long idle interval and
    presence are test_mqtt_presence.py's): these tests count reports."""
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", ADMIN_TOKEN, env={
        "EDGEFLEET_MQTT_URL": broker.admin_url, "EDGEFLEET_REPLICA_ID": "replica-a",
        "EDGEFLEET_MQTT_IDLE_HEARTBEAT_S": "1"})  # fmt: skip
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def enroll_token(server: ServerProcess) -> str:
    with server.client() as admin:
        return str(admin.create_enrollment_token(auto_approve=True)["token"])


@pytest.fixture
def mqtt_agents() -> Iterator[list[AgentProcess]]:
    """Agents a test starts: each stopped when it ends."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def start_agent(server: ServerProcess, url: str, token: str, directory: Path, name: str,
                extra: list[str] | None = None) -> AgentProcess:  # fmt: skip
    agent = AgentProcess(server.url, directory / name, token, name, extra_args=[
        "--mqtt", url, "--statsd-port", "0", "--otlp-port", "off",
        "--attestation-interval", "0", *(extra or [])])  # fmt: skip
    agent.start()
    return agent


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(f"^{pattern}$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def requests_to(server: ServerProcess, route: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    pattern = rf'^edgefleet_http_requests_total\{{[^}}]*route="{re.escape(route)}"[^}}]*\}} (\S+)$'
    return sum(float(m[1]) for m in re.finditer(pattern, text, re.MULTILINE))


def labels_applied(agent: AgentProcess) -> dict[str, str]:
    return dict(agent.state().get("desired", {}).get("labels", {}))


def test_reports_go_over_mqtt_and_a_change_is_pushed_without_polling(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str,
    mqtt_agents: list[AgentProcess], tmp_path: Path,
) -> None:  # fmt: skip
    with server.client() as admin:
        admin.set_telemetry_policy(fast_policy())  # uploads every second
    agent = start_agent(server, broker.url, enroll_token, tmp_path, "mqtt-1", FAST_AGENT_ARGS)
    mqtt_agents.append(agent)
    before = metric(server, "edgefleet_reports_ingested_total", transport="mqtt")
    wait_for(lambda: metric(server, "edgefleet_reports_ingested_total", transport="mqtt")
             >= before + 3 or not agent.running, timeout_s=60,
             what="reports over MQTT")  # fmt: skip
    assert agent.running, agent.log()
    with server.client() as admin:
        device = admin.get_device(str(agent.device_id))
        assert device["status"] == "online"
        admin.label_device(str(agent.device_id), {"site": "berlin"}, [])
    wait_for(lambda: labels_applied(agent).get("site") == "berlin", timeout_s=20,
             what="the pushed label")  # fmt: skip
    # Telemetry batches too, stored exactly as over HTTP.
    wait_for(lambda: metric(server, "edgefleet_telemetry_batches_accepted_total") >= 2,
             timeout_s=30, what="telemetry batches over MQTT")  # fmt: skip
    assert metric(server, "edgefleet_messages_dropped_total", reason="duplicate_batch") == 0
    # Pushed, not polled; reports over MQTT, only the first after a connect over HTTP.
    assert requests_to(server, DESIRED_ROUTE) == 0
    assert requests_to(server, REPORT_ROUTE) <= 2
    assert requests_to(server, TELEMETRY_ROUTE) == 0
    assert "MQTT device channel open" in agent.log()


def test_a_reconnecting_device_gets_the_retained_state(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str,
    mqtt_agents: list[AgentProcess], tmp_path: Path,
) -> None:  # fmt: skip
    agent = start_agent(server, broker.url, enroll_token, tmp_path, "mqtt-2")
    mqtt_agents.append(agent)
    wait_for(lambda: agent.state().get("applied_generation", 0) > 0, timeout_s=60,
             what="a first desired state")  # fmt: skip
    agent.stop()
    with server.client() as admin:
        admin.label_device(str(agent.device_id), {"shelf": "7"}, [])
    agent.start()
    wait_for(lambda: labels_applied(agent).get("shelf") == "7", timeout_s=30,
             what="the retained document after a reconnect")  # fmt: skip
    assert requests_to(server, DESIRED_ROUTE) == 0


def test_an_agent_reaches_the_broker_over_tls(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str,
    mqtt_agents: list[AgentProcess], tmp_path: Path, tls: tuple[Path, Path, Path],
) -> None:  # fmt: skip
    agent = start_agent(server, broker.tls_url, enroll_token, tmp_path, "mqtt-tls",
                        ["--mqtt-ca-file", str(tls[0])])  # fmt: skip
    mqtt_agents.append(agent)
    wait_for(lambda: agent.state().get("applied_generation", 0) > 0 or not agent.running,
             timeout_s=60, what="the desired state over mqtts")  # fmt: skip
    assert agent.running, agent.log()
    with server.client() as admin:
        admin.label_device(str(agent.device_id), {"tls": "yes"}, [])
    wait_for(lambda: labels_applied(agent).get("tls") == "yes", timeout_s=20,
             what="a change over mqtts")  # fmt: skip
    # Without the CA the broker's certificate is refused: the agent never gets a channel.
    stranger = start_agent(server, broker.tls_url, enroll_token, tmp_path, "mqtt-no-ca")
    mqtt_agents.append(stranger)
    wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in stranger.log(), timeout_s=30,
             what="the untrusted broker refused")  # fmt: skip
    assert "MQTT device channel open" not in stranger.log()


def test_a_broker_restart_loses_neither_the_channel_nor_the_desired_state(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str,
    mqtt_agents: list[AgentProcess], tmp_path: Path,
) -> None:  # fmt: skip
    """The broker restarts (its clients, roles, retained messages and sessions persisted):
    the agent reconnects with backoff, the control plane resumes its session, and a change
    made meanwhile reaches the device."""
    agent = start_agent(server, broker.url, enroll_token, tmp_path, "mqtt-restart")
    mqtt_agents.append(agent)
    wait_for(lambda: agent.state().get("applied_generation", 0) > 0, timeout_s=60,
             what="a first desired state")  # fmt: skip
    broker.stop()
    with server.client() as admin:
        admin.label_device(str(agent.device_id), {"after": "restart"}, [])
    broker.start()
    wait_for(lambda: labels_applied(agent).get("after") == "restart", timeout_s=90,
             what="the change made while the broker was down")  # fmt: skip
    before = metric(server, "edgefleet_reports_ingested_total", transport="mqtt")
    wait_for(lambda: metric(server, "edgefleet_reports_ingested_total", transport="mqtt")
             >= before + 2, timeout_s=60, what="reports after the restart")  # fmt: skip
    assert agent.running
    assert requests_to(server, DESIRED_ROUTE) == 0


def test_an_agent_the_broker_refuses_backs_off_and_keeps_running(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str,
    mqtt_agents: list[AgentProcess], tmp_path: Path,
) -> None:  # fmt: skip
    """Its broker client deleted behind the control plane's back: the broker kicks the agent
    and refuses it; the agent says why and tries again later, it does not exit."""
    agent = start_agent(server, broker.url, enroll_token, tmp_path, "mqtt-refused")
    mqtt_agents.append(agent)
    wait_for(lambda: agent.state().get("applied_generation", 0) > 0, timeout_s=60,
             what="a first desired state")  # fmt: skip
    _, ctrl = require_mosquitto()
    subprocess.run([ctrl, "-h", "127.0.0.1", "-p", str(broker.port), "-u", ADMIN_USER,
                    "-P", ADMIN_PASSWORD, "dynsec", "deleteClient", str(agent.device_id)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    # Refused, backed off, refused again: still running.
    wait_for(lambda: agent.log().count("code=broker_refused") >= 2 or not agent.running,
             timeout_s=60, what="the refusal logged twice")  # fmt: skip
    assert agent.running, agent.log()


class RawMqttDevice:
    """A device enrolled over HTTP by hand, speaking MQTT with edgefleet's own client and
    signing: a test can replay, alter or misdirect exactly what it publishes."""

    def __init__(self, server: ServerProcess, broker: BrokerProcess, token: str) -> None:
        self.http = RawDevice(server.url)
        answer = self.http.enroll(token)
        assert answer.status_code == 200, answer.text
        credentials = self.http.call("GET", f"/v1/devices/{self.id}/broker")
        assert credentials.status_code == 200, credentials.text
        self.credentials = credentials.json()
        self.url = BrokerUrl.parse(broker.url)
        self.seq = 0

    @property
    def id(self) -> str:
        return self.http.id

    def connection(self) -> MqttConnection:
        return MqttConnection(self.url, client_id=self.credentials["client_id"],
                              username=self.credentials["username"],
                              password=self.credentials["password"])  # fmt: skip

    def signed(self, payload: bytes, topic: str | None = None,
               age: timedelta = timedelta()) -> list[tuple[str, str]]:  # fmt: skip
        self.seq += 1
        return sign_message(self.http.key, topic or device_topic(self.id, Channel.REPORT),
                            payload, self.id, self.seq, datetime.now(UTC) - age)  # fmt: skip


REPORT = to_binary(Report(applied_generation=0))


def test_forged_replayed_and_foreign_messages_are_refused(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str
) -> None:
    device, other = (RawMqttDevice(server, broker, enroll_token) for _ in range(2))
    topic = device_topic(device.id, Channel.REPORT)

    def dropped(reason: str) -> float:
        return metric(server, "edgefleet_messages_dropped_total", reason=reason)

    counts = {r: dropped(r) for r in ("replayed_request", "bad_signature", "unsigned_request")}
    taken = metric(server, "edgefleet_reports_ingested_total", transport="mqtt")

    async def play() -> None:
        connection = device.connection()
        await connection.connect()
        try:
            properties = device.signed(REPORT)
            await connection.publish(topic, REPORT, user_properties=properties)
            await connection.publish(topic, REPORT, user_properties=properties)  # replayed
            altered = to_binary(Report(applied_generation=1))
            await connection.publish(topic, altered, user_properties=device.signed(REPORT))
            await connection.publish(topic, REPORT)  # unsigned
            # Another device's topic: the broker refuses it (its ACL), the message goes
            # nowhere; and its desired state cannot be read.
            foreign = device_topic(other.id, Channel.REPORT)
            with pytest.raises(Forbidden):
                await connection.publish(foreign, REPORT, user_properties=device.signed(
                    REPORT, foreign))  # fmt: skip
            with pytest.raises(Forbidden):
                await connection.subscribe([device_topic(other.id, Channel.DESIRED)])
            with pytest.raises(Forbidden):  # nor may it publish a desired state
                await connection.publish(device_topic(device.id, Channel.DESIRED), b"{}")
        finally:
            await connection.close()

    asyncio.run(play())
    wait_for(lambda: all(dropped(r) == counts[r] + 1 for r in counts), timeout_s=20,
             what="each bad message counted once")  # fmt: skip
    assert metric(server, "edgefleet_reports_ingested_total", transport="mqtt") == taken + 1
    with FleetClient(server.url, ADMIN_TOKEN) as admin:
        assert admin.get_device(device.id)["last_seen"] is not None


def test_a_revoked_device_is_disconnected_and_refused_by_the_broker(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str
) -> None:
    device = RawMqttDevice(server, broker, enroll_token)

    async def play() -> None:
        connection = device.connection()
        await connection.connect()
        await connection.subscribe([device_topic(device.id, Channel.DESIRED)])
        with FleetClient(server.url, ADMIN_TOKEN) as admin:
            await asyncio.to_thread(admin.change_enrollment, device.id, "revoke")
        await asyncio.wait_for(connection.lost.wait(), 20)
        # Mosquitto queues a DISCONNECT (0x98, administrative action) and closes the socket:
        # when packets were queued ahead of it (the revocation clears its retained desired
        # state, an empty PUBLISH on the topic this device subscribed to),
        # the close can win and the client sees the connection drop instead.
        assert connection.lost_reason in (
            "disconnected: Administrative action",
            "disconnected: Unspecified error",
        ), connection.lost_reason
        await connection.close()
        with pytest.raises(Unauthenticated) as refused:
            await device.connection().connect()
        assert refused.value.code == "broker_refused"

    asyncio.run(play())
    # Nor does the control plane hand it credentials any more.
    answer = device.http.call("GET", f"/v1/devices/{device.id}/broker")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "device_revoked"


def test_two_replicas_split_the_device_messages(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str, tls: tuple[Path, Path, Path]
) -> None:
    """A second replica on the same data dir, connected over TLS, joins the shared
    subscription: the broker hands each message to one of the two, every message is taken
    once."""
    second = ServerProcess(server.data_dir, ADMIN_TOKEN, env={
        "EDGEFLEET_MQTT_URL": broker.admin_tls_url, "EDGEFLEET_MQTT_CA_FILE": str(tls[0]),
        "EDGEFLEET_REPLICA_ID": "replica-b",
        "EDGEFLEET_ROLES": "device",  # its session ends with it (no share kept for later):
        "EDGEFLEET_MQTT_SESSION_EXPIRY_S": "0"})  # fmt: skip
    second.log_path = server.data_dir.parent / "replica-b.log"
    first_url = server.url
    try:
        second.start()
        server.url = first_url  # the shared data dir's server.url now names the second
        wait_for(lambda: "MQTT device channel connected" in second.log(), timeout_s=20,
                 what="the second replica on the broker")  # fmt: skip
        device = RawMqttDevice(server, broker, enroll_token)
        topic = device_topic(device.id, Channel.REPORT)
        taken = {r.url: metric(r, "edgefleet_reports_ingested_total", transport="mqtt")
                 for r in (server, second)}  # fmt: skip

        async def publish(count: int) -> None:
            connection = device.connection()
            await connection.connect()
            try:
                for _ in range(count):
                    await connection.publish(topic, REPORT, user_properties=device.signed(REPORT))
            finally:
                await connection.close()

        asyncio.run(publish(40))

        def split() -> list[float]:
            return [metric(r, "edgefleet_reports_ingested_total", transport="mqtt") - taken[r.url]
                    for r in (server, second)]  # fmt: skip

        wait_for(lambda: sum(split()) >= 40, timeout_s=30, what="every report taken")
        assert sum(split()) == 40
        assert min(split()) > 0, split()  # both replicas took a share
    finally:
        second.stop()


def test_a_restarted_control_plane_loses_no_message(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str
) -> None:
    """Reports published while the control plane is down wait in its persistent session
    and are all taken, once each, when it comes back (SIGKILL: no clean disconnect) — also
    those signed longer ago than the clock skew allows a request (an outage of hours: they
    carry the device's clock of then), since a bus message is judged by its sequence
    number. A replay of one of them afterwards is refused."""
    device = RawMqttDevice(server, broker, enroll_token)
    topic = device_topic(device.id, Channel.REPORT)
    server.kill()
    published: list[list[tuple[str, str]]] = []

    async def publish(count: int, age: timedelta) -> None:
        connection = device.connection()
        await connection.connect()
        try:
            for _ in range(count):
                published.append(device.signed(REPORT, age=age))
                await connection.publish(topic, REPORT, user_properties=published[-1])
        finally:
            await connection.close()

    asyncio.run(publish(10, timedelta(hours=3)))
    asyncio.run(publish(15, timedelta()))
    server.start()
    wait_for(lambda: metric(server, "edgefleet_reports_ingested_total", transport="mqtt") >= 25,
             timeout_s=30, what="the reports queued for the session")  # fmt: skip
    assert metric(server, "edgefleet_reports_ingested_total", transport="mqtt") == 25
    assert metric(server, "edgefleet_messages_dropped_total", reason="replayed_request") == 0

    async def replay() -> None:
        connection = device.connection()
        await connection.connect()
        try:
            await connection.publish(topic, REPORT, user_properties=published[0])
        finally:
            await connection.close()

    asyncio.run(replay())
    wait_for(lambda: metric(server, "edgefleet_messages_dropped_total",
                            reason="replayed_request") == 1,
             timeout_s=20, what="the replay refused")  # fmt: skip
    assert metric(server, "edgefleet_reports_ingested_total", transport="mqtt") == 25


def test_a_device_client_is_created_and_a_stale_one_repaired(broker: BrokerProcess) -> None:
    """The control plane's broker accounts against the real plugin: a new device's client
    (two plugin changes) lets it connect; a client left disabled with another password
    (an older control plane's, say) is repaired by the next control plane that ensures it."""
    device_id = "accounts-device"

    async def can_connect(password: str) -> bool:
        connection = MqttConnection(BrokerUrl.parse(broker.url), client_id=device_id,
                                    username=device_id, password=password)  # fmt: skip
        try:
            await connection.connect()
        except Unauthenticated:
            return False
        await connection.close()
        return True

    async def ensured_by_a_fresh_control_plane() -> str:
        accounts: BrokerAccounts | None = None

        def received(message: ReceivedMessage) -> None:
            assert accounts is not None
            accounts.answered(message)

        admin = MqttConnection(BrokerUrl.parse(broker.admin_url), client_id="accounts-admin",
                               on_message=received)  # fmt: skip
        accounts = BrokerAccounts(b"s" * 32, lambda topic, payload: admin.publish(topic, payload))
        await admin.connect()
        try:
            await admin.subscribe([RESPONSE_TOPIC])
            await accounts.ensure_device(device_id)
        finally:
            await admin.close()
        return accounts.password(device_id)

    password = asyncio.run(ensured_by_a_fresh_control_plane())
    assert asyncio.run(can_connect(password))
    _, ctrl = require_mosquitto()
    for command in (["disableClient", device_id], ["setClientPassword", device_id, "stale"]):
        subprocess.run([ctrl, "-h", "127.0.0.1", "-p", str(broker.port), "-u", ADMIN_USER,
                        "-P", ADMIN_PASSWORD, "dynsec", *command],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
    assert not asyncio.run(can_connect(password))
    assert asyncio.run(ensured_by_a_fresh_control_plane()) == password
    assert asyncio.run(can_connect(password))
