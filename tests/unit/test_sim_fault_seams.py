"""The simulator's fault seams for one real agent process (sim/faulty_agent.py): the link
that loses periodic heartbeats, and the fault variables it reads."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from pathlib import Path

import pytest

from edgefleet.core.protocol import NodeStatus, Report, to_json
from edgefleet.sim.faulty_agent import heartbeat_loss, kill_moments
from edgefleet.sim.transport import LossyHeartbeats
from edgefleet.transport.messages import Headers, TransportResponse


class CountingServer:
    """Answers every request with its number, as a control plane would answer reports."""

    def __init__(self) -> None:
        self.received: list[str] = []

    async def request(self, method: str, target: str, body: bytes, headers: Headers,
                      timeout_s: float) -> TransportResponse:  # fmt: skip
        self.received.append(target)
        return TransportResponse(200, str(len(self.received)).encode())

    async def download(self, target: str, headers: Headers, destination: Path,
                       timeout_s: float) -> TransportResponse:  # fmt: skip
        raise AssertionError("not used")

    async def close(self) -> None:
        pass


def report(scheduled: bool) -> bytes:
    return to_json(Report(applied_generation=1, node=NodeStatus(scheduled=scheduled)))


def test_the_lossy_link_loses_that_share_of_periodic_heartbeats_only() -> None:
    server = CountingServer()
    link = LossyHeartbeats(server, 0.25, random.Random(7))

    async def send(n: int, body: bytes, target: str = "/v1/devices/d/report") -> list[bytes]:
        return [(await link.request("POST", target, body, {}, 5)).body for _ in range(n)]

    heard = asyncio.run(send(2000, report(scheduled=True)))
    lost = 2000 - len(server.received)
    assert 400 < lost < 600  # about a quarter
    assert all(a.isdigit() for a in heard)  # a lost one hears the previous answer
    server.received.clear()
    asyncio.run(send(50, report(scheduled=False)))  # an extra report on a change
    asyncio.run(send(50, b"{}", "/v1/devices/d/telemetry"))
    assert len(server.received) == 100


@pytest.mark.parametrize(
    ("environ", "moments", "loss"),
    [
        ({}, frozenset(), 0.0),
        ({"EDGEFLEET_FAULT_KILL_AT": "staged, health-check"},
         frozenset({"install:staged", "install:health-check"}), 0.0),
        ({"EDGEFLEET_FAULT_HEARTBEAT_LOSS": "0.1"}, frozenset(), 0.1),
    ],
)  # fmt: skip
def test_fault_variables(environ: Mapping[str, str], moments: frozenset[str], loss: float) -> None:
    assert (kill_moments(environ), heartbeat_loss(environ)) == (moments, loss)


@pytest.mark.parametrize(
    "environ",
    [{"EDGEFLEET_FAULT_KILL_AT": "exploded"}, {"EDGEFLEET_FAULT_HEARTBEAT_LOSS": "1"},
     {"EDGEFLEET_FAULT_HEARTBEAT_LOSS": "lots"}],
)  # fmt: skip
def test_a_bad_fault_variable_is_refused_naming_it(environ: Mapping[str, str]) -> None:
    with pytest.raises(SystemExit, match=next(iter(environ))):
        kill_moments(environ)
        heartbeat_loss(environ)
