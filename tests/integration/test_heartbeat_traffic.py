"""What a device's steady heartbeating costs on the wire: one kept-alive connection across
heartbeat-sized gaps (a new one per heartbeat would mean, with https, a TLS handshake every
15 s on both sides), and the inventory only when it changed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.transport.http import HttpTransport
from tests.device_requests import INVENTORY, RawDevice

UVICORN_DEFAULT_KEEP_ALIVE_S = 5  # what the server closed idle connections after before


class Relay:
    """A TCP relay in front of the server, on a thread of its own: counts the connections
    made through it and keeps every byte sent upstream."""

    def __init__(self, server_url: str) -> None:
        self._host, port = server_url.removeprefix("http://").rsplit(":", 1)
        self._port = int(port)
        self.connections = 0
        self.upstream = bytearray()
        self.url = ""
        self._writers: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> None:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._listener.sockets[0].getsockname()[1]}"

    async def _close(self) -> None:
        self._listener.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)
        await self._listener.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(self._host, self._port)
        self._writers += [writer, upstream_writer]
        await asyncio.gather(self._pipe(reader, upstream_writer, self.upstream),
                             self._pipe(upstream_reader, writer, None))  # fmt: skip

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep: bytearray | None
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if keep is not None:
                    keep += data
                writer.write(data)
                await writer.drain()
        writer.close()

    def report_bodies(self) -> list[dict[str, object]]:
        """The JSON bodies of the heartbeats relayed so far."""
        bodies = []
        for match in re.finditer(rb"POST /v1/devices/[^/]+/report HTTP/1.1\r\n(.*?)\r\n\r\n",
                                 bytes(self.upstream), re.S):  # fmt: skip
            length = int(re.search(rb"content-length: (\d+)", match.group(1)).group(1))  # type: ignore[union-attr]
            bodies.append(json.loads(self.upstream[match.end() : match.end() + length]))
        return bodies


@pytest.fixture
def relay(server: ServerProcess) -> Iterator[Relay]:
    with Relay(server.url) as running:
        yield running


def test_requests_seconds_apart_share_one_connection(relay: Relay) -> None:
    async def two_requests() -> None:
        transport = HttpTransport(relay.url)
        try:
            for pause_s in (UVICORN_DEFAULT_KEEP_ALIVE_S + 1, 0):
                answer = await transport.request("GET", "/healthz", b"", {}, timeout_s=10)
                assert answer.status == 200
                await asyncio.sleep(pause_s)
        finally:
            await transport.close()

    asyncio.run(two_requests())
    assert relay.connections == 1


def test_heartbeats_carry_the_inventory_only_when_it_changed(
    admin: FleetClient, relay: Relay, tmp_path: Path
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = AgentProcess(relay.url, tmp_path / "agent", token, "thrifty", heartbeat_interval_s=1)
    agent.start()
    try:
        wait_for(lambda: len(relay.report_bodies()) >= 5, what="five heartbeats")
    finally:
        agent.stop()
    reports = relay.report_bodies()
    assert "inventory" in reports[0]
    assert sum("inventory" not in r for r in reports) >= len(reports) // 2
    device = admin.get_device(agent.device_id or "")
    assert device["inventory"]["hardware"]["cpu_count"] >= 1


def test_a_heartbeat_without_inventory_keeps_the_stored_one(
    admin: FleetClient, server: ServerProcess
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    device = RawDevice(server.url)
    assert device.enroll(token).status_code == 200
    target = f"/v1/devices/{device.id}/report"
    bare = device.call("POST", target, {"applied_generation": 0})
    assert bare.status_code == 200
    assert "inventory_optional" not in bare.json()  # said only in answer to an inventory
    assert admin.get_device(device.id)["inventory"]["hardware"]["disk_mb"] == 4096
    changed = json.loads(json.dumps(INVENTORY))
    changed["hardware"]["disk_mb"] = 64
    answer = device.call("POST", target, {"applied_generation": 0, "inventory": changed})
    assert answer.status_code == 200
    assert answer.json()["inventory_optional"] is True  # what lets agents leave it out
    assert admin.get_device(device.id)["inventory"]["hardware"]["disk_mb"] == 64
