"""Sealed telemetry on the broker: a real Mosquitto, a control plane on it (--mqtt) with the
fleet's sealing on, and a real agent on the MQTT channel pushing StatsD metrics. A
privileged client of the broker (its admin, who may read every topic) subscribed to the
device's telemetry topic receives the batches, every one sealed, with neither the metric's
name nor its value in clear; the control plane opens and stores every window.

A revoked device is disconnected and refused by the broker:
`test_mqtt_channel.py::test_a_revoked_device_is_disconnected_and_refused_by_the_broker`."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.sealing import MAGIC
from edgefleet.transport.mqtt_client import BrokerUrl, MqttConnection, ReceivedMessage
from edgefleet.transport.mqtt_topics import TELEMETRY_SEALED, Channel, device_topic
from tests.integration import test_mqtt_channel as channel
from tests.mqtt_broker import BrokerProcess
from tests.telemetry_fleet import FAST_AGENT_ARGS, fast_policy, send_lines, statsd_port

# The channel tests' fixtures: a broker with TLS, a control plane on it, an enrollment token.
tls, broker, server = channel.tls, channel.broker, channel.server
enroll_token, mqtt_agents = channel.enroll_token, channel.mqtt_agents
METRIC = "inference.secret_latency_ms"  # a prefix the policy collects
VALUE = 4242.0


def test_telemetry_on_the_broker_is_sealed(
    server: ServerProcess, broker: BrokerProcess, enroll_token: str,
    mqtt_agents: list[AgentProcess], tmp_path: Path,
) -> None:  # fmt: skip
    with server.client() as admin:
        admin.set_telemetry_policy(fast_policy())
        sealing = admin.set_telemetry_sealing(True)
    assert sealing["enabled"] and sealing["key_id"]
    agent = channel.start_agent(server, broker.url, enroll_token, tmp_path, "sealed-mqtt",
                        [*FAST_AGENT_ARGS, "--seal-telemetry"])  # fmt: skip
    mqtt_agents.append(agent)
    device_id = wait_for(lambda: agent.device_id, what="enrollment")
    assert device_id is not None
    seen: list[ReceivedMessage] = []

    async def eavesdrop() -> None:
        spy = MqttConnection(BrokerUrl.parse(broker.admin_url), client_id="gov-spy",
                             on_message=seen.append)  # fmt: skip
        await spy.connect()
        await spy.subscribe([device_topic(device_id, Channel.TELEMETRY)])
        try:
            await asyncio.to_thread(wait_for, lambda: agent.state().get("desired", {})
                                    .get("telemetry", {}).get("sealing"), 30, 0.1,
                                    "the ingest key in the desired state")  # fmt: skip
            await asyncio.to_thread(wait_for, lambda: (agent.data_dir / "statsd.address")
                                    .exists(), 30, 0.1, "StatsD")  # fmt: skip
            await asyncio.to_thread(send_lines, statsd_port(agent),
                                    [f"{METRIC}:{VALUE}|ms"] * 40)  # fmt: skip

            def stored() -> bool:
                with server.client() as admin:
                    summary = admin.telemetry_query(METRIC, device=device_id, since="10m")
                return bool(summary["summary"]) and summary["summary"]["count"] == 40

            await asyncio.to_thread(wait_for, stored, 60, 0.2, f"40 timings of {METRIC}")
            await asyncio.sleep(1)  # the spy's copy of the last batch is on its way
        finally:
            await spy.close()

    asyncio.run(eavesdrop())
    assert agent.running, agent.log()
    assert seen, "the broker carried no telemetry batch"
    for message in seen:
        assert message.user_property(TELEMETRY_SEALED) == "1"
        assert message.payload.startswith(MAGIC)
        assert METRIC.encode() not in message.payload
        assert b"secret_latency" not in message.payload
        for packed in (struct.pack("<d", VALUE), struct.pack(">d", VALUE), b"4242"):
            assert packed not in message.payload
