"""Presence on the MQTT channel against a real Mosquitto, a real control plane (the default
idle interval, 300 s) and real agents: an agent killed with SIGKILL shows offline and dead
through its Last Will within seconds (phi, judging a 300 s interval, would take many
minutes); an idle device is told the long interval and stays online and alive between its
reports; a forged Will is dropped and counted, a replayed old one too, and the broker
refuses a Will on another device's topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgefleet.client import FleetClient
from edgefleet.errors import Unauthenticated
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.keys import DeviceKey
from edgefleet.security.message_signing import sign_message
from edgefleet.transport.mqtt_client import MqttConnection, Will
from edgefleet.transport.mqtt_topics import Channel, device_topic
from tests.conftest import ADMIN_TOKEN
from tests.integration.test_mqtt_channel import RawMqttDevice, metric, start_agent
from tests.mqtt_broker import BrokerProcess, require_mosquitto

IDLE_S = 300.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    require_mosquitto()
    process = BrokerProcess(tmp_path_factory.mktemp("broker"))
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, broker: BrokerProcess
) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", ADMIN_TOKEN, env={
        "EDGEFLEET_MQTT_URL": broker.admin_url, "EDGEFLEET_REPLICA_ID": "replica-p"})  # fmt: skip
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
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def told_interval(agent: AgentProcess) -> float | None:
    interval = agent.state().get("desired", {}).get("agent", {}).get("heartbeat_interval_s")
    return None if interval is None else float(interval)


def node(admin: FleetClient, device_id: str) -> dict[str, object]:
    return dict(next(n for n in admin.list_nodes() if n["id"] == device_id))


def idle_agent(server: ServerProcess, broker: BrokerProcess, token: str, directory: Path,
               name: str) -> AgentProcess:  # fmt: skip
    """An agent on MQTT (its own heartbeat interval 1 s) told the idle interval."""
    agent = start_agent(server, broker.url, token, directory, name)
    wait_for(lambda: told_interval(agent) == IDLE_S or not agent.running, timeout_s=60,
             what="the idle interval pushed")  # fmt: skip
    assert agent.running, agent.log()
    return agent


def test_an_idle_device_is_told_the_long_interval_and_stays_alive_between_reports(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str,
    agents: list[AgentProcess], tmp_path: Path,
) -> None:  # fmt: skip
    agent = idle_agent(server, broker, enroll_token, tmp_path, "idle-1")
    agents.append(agent)
    device_id = str(agent.device_id)
    time.sleep(3)  # the report after applying the idle interval goes out
    reports = metric(server, "edgefleet_reports_ingested_total", transport="mqtt")
    # Silent for 25 s: at its own 1 s interval phi would have called it dead long ago.
    time.sleep(25)
    assert metric(server, "edgefleet_reports_ingested_total", transport="mqtt") == reports
    with server.client() as admin:
        assert admin.get_device(device_id)["status"] == "online"
        assert node(admin, device_id)["liveness"] == "alive"
    assert metric(server, "edgefleet_presence_taken_total", state="online") >= 1


def test_a_killed_agent_shows_offline_and_dead_through_its_will_within_seconds(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str,
    agents: list[AgentProcess], tmp_path: Path,
) -> None:  # fmt: skip
    agent = idle_agent(server, broker, enroll_token, tmp_path, "killed-1")
    agents.append(agent)
    device_id = str(agent.device_id)
    with server.client() as admin:
        wait_for(lambda: node(admin, device_id)["liveness"] == "alive", timeout_s=20,
                 what="the node alive")  # fmt: skip
        agent.kill()  # SIGKILL: no goodbye; the broker sees the socket close
        killed_at = time.monotonic()
        wait_for(lambda: admin.get_device(device_id)["status"] == "offline", timeout_s=20,
                 interval_s=0.2, what="offline through the Will")  # fmt: skip
        took_s = time.monotonic() - killed_at
        assert node(admin, device_id)["liveness"] == "dead"
    assert took_s < 20  # phi, against 300 s, would wait more than 10 minutes
    # It comes back: online again, told the idle interval again.
    agent.start()
    with server.client() as admin:
        wait_for(lambda: admin.get_device(device_id)["status"] == "online"
                 and node(admin, device_id)["liveness"] == "alive", timeout_s=60,
                 what="back online")  # fmt: skip
    wait_for(lambda: told_interval(agent) == IDLE_S, timeout_s=30, what="the idle interval")


def will_of(device: RawMqttDevice, key: DeviceKey, seq: int,
            topic: str | None = None) -> Will:  # fmt: skip
    topic = topic or device_topic(device.id, Channel.PRESENCE)
    signature = sign_message(key, topic, b"offline", device.id, seq, datetime.now(UTC))
    return Will(topic, b"offline", user_properties=tuple(signature))


def connection_with(device: RawMqttDevice, will: Will) -> MqttConnection:
    credentials = device.credentials
    return MqttConnection(device.url, client_id=credentials["client_id"],
                          username=credentials["username"],
                          password=credentials["password"], will=will)  # fmt: skip


async def say_online(device: RawMqttDevice, connection: MqttConnection, seq: int) -> None:
    topic = device_topic(device.id, Channel.PRESENCE)
    signature = sign_message(device.http.key, topic, b"online", device.id, seq,
                             datetime.now(UTC))  # fmt: skip
    await connection.publish(topic, b"online", user_properties=signature)


def test_forged_replayed_and_foreign_wills_are_refused(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str
) -> None:
    device, other = (RawMqttDevice(server, broker, enroll_token) for _ in range(2))
    for d in (device, other):
        assert d.http.report().status_code == 200  # seen, with a node record

    def dropped(reason: str) -> float:
        return metric(server, "edgefleet_messages_dropped_total", reason=reason)

    def status(device_id: str) -> str:
        with FleetClient(server.url, ADMIN_TOKEN) as admin:
            return str(admin.get_device(device_id)["status"])

    forged, stale = dropped("bad_signature"), dropped("stale_presence")
    offline = metric(server, "edgefleet_presence_taken_total", state="offline")

    async def play() -> None:
        # 1. A connection with its own Will (#2), online (#1); then one whose Will is
        # signed by another key, ended so that the broker publishes it.
        first_will = will_of(device, device.http.key, 2)
        connection = connection_with(device, first_will)
        await connection.connect()
        await say_online(device, connection, 1)
        await connection.close()  # a clean goodbye: its Will is dropped by the broker
        connection = connection_with(device, will_of(device, DeviceKey.generate(), 4))
        await connection.connect()
        await say_online(device, connection, 3)
        await connection.close(send_will=True)
        await asyncio.to_thread(wait_for, lambda: dropped("bad_signature") == forged + 1,
                                20, 0.2, "the forged Will dropped")  # fmt: skip
        # 2. Online again (#5), then the first connection's Will (#2) replayed.
        connection = connection_with(device, will_of(device, device.http.key, 6))
        await connection.connect()
        await say_online(device, connection, 5)
        await connection.close()
        replay = connection_with(device, first_will)
        await replay.connect()
        await replay.close(send_will=True)
        await asyncio.to_thread(wait_for, lambda: dropped("stale_presence") == stale + 1,
                                20, 0.2, "the replayed Will dropped")  # fmt: skip
        assert await asyncio.to_thread(status, device.id) == "online"
        # 3. The other device online; a Will on its topic from this device's client.
        theirs = connection_with(other, will_of(other, other.http.key, 2))
        await theirs.connect()
        await say_online(other, theirs, 1)
        their_topic = device_topic(other.id, Channel.PRESENCE)
        foreign = connection_with(device, will_of(other, device.http.key, 99, their_topic))
        try:
            await foreign.connect()
        except Unauthenticated as refused:  # a broker may check a Will's topic at connect,
            assert refused.code == "broker_refused"
        else:  # ... Mosquitto 2.0 when it would publish it: it drops it
            await foreign.close(send_will=True)
        await asyncio.sleep(2)
        assert await asyncio.to_thread(status, other.id) == "online"
        await theirs.close()

    asyncio.run(play())
    assert metric(server, "edgefleet_presence_taken_total", state="offline") == offline
    # The foreign Will never reached the control plane (it would have been dropped there,
    # as signed by another device's key): the broker's ACL stopped it.
    assert dropped("bad_signature") == forged + 1
