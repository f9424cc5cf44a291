"""Sealed telemetry end to end: a real control plane, a real agent talking to it through a
relay that keeps every byte it passes upstream, and a workload pushing StatsD metrics. While
the fleet's sealing policy is off the relay can read every batch; once it is on, and after
the ingest key is rotated, it can read none, and the control plane still stores every
window."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.client import FleetClient
from edgefleet.core.telemetry.wire import Batch, decode_batch, encode_batch
from edgefleet.errors import InvalidInput
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.request_signing import sign_request
from edgefleet.security.sealing import MAGIC, key_id_of, seal
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice
from tests.relay import Relay
from tests.telemetry_fleet import FAST_AGENT_ARGS, fast_policy, send_lines, statsd_port

SEALED = "application/x-edgefleet-telemetry-sealed"


def set_sealing(server: ServerProcess, enabled: bool, rotate: bool = False) -> dict[str, Any]:
    answer = httpx.put(f"{server.url}/v1/telemetry/sealing",
                       json={"enabled": enabled, "rotate": rotate},
                       headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


@pytest.fixture
def relayed_agent(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> Iterator[tuple[AgentProcess, Relay]]:
    admin.set_telemetry_policy(fast_policy())
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    with Relay(server.url) as relay:
        name = f"sealed-{secrets.token_hex(3)}"  # names are unique in the module's fleet
        agent = AgentProcess(relay.url, tmp_path / name, token, name,
                             extra_args=FAST_AGENT_ARGS)  # fmt: skip
        agent.start()
        try:
            wait_for(lambda: agent.state().get("desired", {}).get("telemetry"),
                     what="the telemetry policy")  # fmt: skip
            wait_for(lambda: (agent.data_dir / "statsd.address").exists(), what="StatsD")
            yield agent, relay
        finally:
            agent.stop()


def telemetry_bodies(relay: Relay, besides: list[bytes] | None = None) -> list[bytes]:
    """The bodies of the telemetry uploads relayed so far, but those in `besides` (requests
    are listed connection by connection, not in time order)."""
    known = set(besides or ())
    return [body for method, path, body in relay.requests()
            if method == "POST" and path.endswith("/telemetry") and body not in known]  # fmt: skip


def push_and_store(admin: FleetClient, agent: AgentProcess, metric: str) -> None:
    """Push 40 timings of `metric` and wait until the control plane stored all of them."""
    send_lines(statsd_port(agent), [f"{metric}:{v}|ms" for v in range(1, 41)])

    def stored() -> bool:
        summary = admin.telemetry_query(metric, device=agent.name, since="10m")["summary"]
        return bool(summary) and summary["count"] == 40 and summary["sum"] == 820.0

    wait_for(stored, timeout_s=30, what=f"40 timings of {metric} stored")


def readable_names(body: bytes) -> set[str]:
    try:
        return {w.name for w in decode_batch(body).windows}
    except InvalidInput:
        return set()


def test_a_relay_reads_no_sealed_batch_and_the_server_stores_every_window(
    server: ServerProcess, admin: FleetClient, relayed_agent: tuple[AgentProcess, Relay]
) -> None:
    agent, relay = relayed_agent
    set_sealing(server, False)
    # Plain: what the relay passes upstream is the batch itself.
    push_and_store(admin, agent, "inference.plain_probe_ms")
    bodies = telemetry_bodies(relay)
    assert any("inference.plain_probe_ms" in readable_names(b) for b in bodies)

    status = set_sealing(server, True)
    key = base64.b64decode(status["public_key"])
    assert status["enabled"] and status["key_id"] == key_id_of(key).hex()
    wait_for(lambda: agent.state()["desired"]["telemetry"].get("sealing", {}).get("key_id")
             == status["key_id"], what="the ingest key in the desired state")  # fmt: skip
    seen = telemetry_bodies(relay)
    push_and_store(admin, agent, "inference.sealed_probe_ms")
    new = telemetry_bodies(relay, seen)
    # (an upload already under way when the key arrived may still go plain)
    sealed = [b for b in new if b.startswith(MAGIC)]
    assert sealed and not any(readable_names(b) for b in sealed)
    assert not any("inference.sealed_probe_ms" in readable_names(b) for b in new)
    upstream = b"".join(bytes(s) for s in relay.streams)
    assert b"sealed_probe" not in upstream
    assert f"content-type: {SEALED}".encode() in upstream.lower()

    # Rotation: the agent follows the new key; the server opens batches sealed to either.
    rotated = set_sealing(server, True, rotate=True)
    assert rotated["key_id"] != status["key_id"]
    wait_for(lambda: agent.state()["desired"]["telemetry"]["sealing"]["key_id"]
             == rotated["key_id"], what="the rotated key in the desired state")  # fmt: skip
    seen = telemetry_bodies(relay)
    push_and_store(admin, agent, "inference.rotated_probe_ms")
    after = [b for b in telemetry_bodies(relay, seen) if b.startswith(MAGIC)]
    assert any(b[len(MAGIC) : len(MAGIC) + 8].hex() == rotated["key_id"] for b in after)
    assert b"rotated_probe" not in b"".join(bytes(s) for s in relay.streams)
    assert (server.data_dir / "ingest-keys.json").stat().st_mode & 0o077 == 0
    set_sealing(server, False)


def test_an_agent_that_seals_only_holds_its_batches_until_it_has_a_key(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    set_sealing(server, False)
    admin.set_telemetry_policy(fast_policy())
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    with Relay(server.url) as relay:
        agent = AgentProcess(relay.url, tmp_path / "strict-cam", token, "strict-cam",
                             extra_args=[*FAST_AGENT_ARGS, "--seal-telemetry"])  # fmt: skip
        agent.start()
        try:
            wait_for(lambda: (agent.data_dir / "statsd.address").exists(), what="StatsD")
            send_lines(statsd_port(agent), [f"inference.held_probe_ms:{v}|ms" for v in range(40)])
            wait_for(lambda: "no ingest key yet" in agent.log(), what="a held-back upload")
            assert telemetry_bodies(relay) == []  # nothing went out in the clear
            set_sealing(server, True)
            wait_for(lambda: (admin.telemetry_query("inference.held_probe_ms",
                                                    device=agent.name, since="10m")["summary"]
                              or {}).get("count") == 40,
                     timeout_s=30, what="the held batches stored once sealed")  # fmt: skip
            bodies = telemetry_bodies(relay)
            assert bodies and all(b.startswith(MAGIC) for b in bodies)
        finally:
            agent.stop()
    set_sealing(server, False)


def test_batches_sealed_to_a_forgotten_key_are_sealed_again_not_lost(
    server: ServerProcess, admin: FleetClient, relayed_agent: tuple[AgentProcess, Relay]
) -> None:
    agent, relay = relayed_agent
    first = set_sealing(server, True)
    wait_for(lambda: agent.state()["desired"]["telemetry"].get("sealing", {}).get("key_id")
             == first["key_id"], what="the ingest key in the desired state")  # fmt: skip
    relay.blackholed = True  # the link dies: the timings stay queued on the device
    send_lines(statsd_port(agent), [f"inference.resealed_probe_ms:{v}|ms" for v in range(1, 41)])
    agent.stop()
    for _ in range(3):  # meanwhile the control plane forgets the first key
        set_sealing(server, True, rotate=True)
    relay.blackholed = False
    agent.start()  # its stored desired state still names the first key

    def stored() -> bool:
        summary = admin.telemetry_query("inference.resealed_probe_ms", device=agent.name,
                                        since="10m")["summary"]  # fmt: skip
        return bool(summary) and summary["count"] == 40

    wait_for(stored, timeout_s=40, what="the queued timings stored after sealing again")
    assert "unknown_ingest_key" in agent.log()
    set_sealing(server, False)


def test_a_sealed_batch_opens_only_as_the_device_that_sealed_it(
    server: ServerProcess, admin: FleetClient
) -> None:
    key = base64.b64decode(set_sealing(server, True)["public_key"])
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    one, other = RawDevice(server.url), RawDevice(server.url)
    assert one.enroll(token).is_success and other.enroll(token).is_success
    payload = seal(key, one.id, encode_batch(Batch(seq=1, windows=())))
    for device, status, code in ((other, 400, "bad_sealed_payload"), (one, 200, None)):
        target = f"/v1/devices/{device.id}/telemetry?dropped_through_seq=0"
        headers = sign_request(device.key, "POST", target, payload, device.id, datetime.now(UTC))
        answer = device.send("POST", target, payload, {**headers, "content-type": SEALED})
        assert answer.status_code == status, answer.text
        if code is not None:
            assert answer.json()["error"]["code"] == code
    set_sealing(server, False)
