"""Long polls woken by changes made on another replica: two real `edgefleet server`
replicas on one PostgreSQL database; a device's long poll held on replica A returns when an
operator changes the device through replica B, woken by PostgreSQL's NOTIFY (A's
`edgefleet_desired_notifications_total{result="woke"}` counts it), not by the 5 s re-read;
after A's listening connection is terminated it listens again and the next change still
wakes through it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from edgefleet.localfleet import ServerProcess, wait_for
from edgefleet.store.notifications import CHANNEL
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice
from tests.postgres import postgres_unavailable, throwaway_database

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with throwaway_database() as url:
        yield url


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory,
             database_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:  # fmt: skip
    root = tmp_path_factory.mktemp("replicas")
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):  # one shared data dir: the same keys and blobs
            server = ServerProcess(root / "data", ADMIN_TOKEN,
                                   env={"EDGEFLEET_DATABASE_URL": database_url})  # fmt: skip
            server.log_path = root / f"replica-{name}.log"
            started.append(server)
            server.start()
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def woken_by_notify(server: ServerProcess) -> float:
    body = httpx.get(f"{server.url}/metrics", timeout=5).text
    found = re.search(r'^edgefleet_desired_notifications_total\{result="woke"\} (\S+)$',
                      body, re.MULTILINE)  # fmt: skip
    assert found, "the replica exports its notification counter"
    return float(found.group(1))


def listener_pids(database_url: str) -> list[int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND query = :listen"
            ), {"listen": f"LISTEN {CHANNEL}"})  # fmt: skip
            return sorted(row.pid for row in rows)
    finally:
        engine.dispose()


class HeldPoll:
    """A device's long poll for a generation other than `generation`, in a thread."""

    def __init__(self, device: RawDevice, url: str, generation: int) -> None:
        self.result: dict[str, Any] = {}
        target = f"/v1/devices/{device.id}/desired?wait=60"
        _, headers = device.signed("GET", target)
        headers = {**headers, "if-none-match": f'"{generation}"'}

        def poll() -> None:
            response = httpx.get(url + target, headers=headers, timeout=90)
            self.result["status"] = response.status_code
            self.result["doc"] = response.json()

        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()

    def answer(self) -> dict[str, Any]:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the long poll never returned"
        assert self.result["status"] == 200
        return dict(self.result["doc"])


def enrolled(server: ServerProcess) -> RawDevice:
    device = RawDevice(server.url)
    with server.client() as operator:
        token = operator.create_enrollment_token(auto_approve=True)["token"]
    assert device.enroll(token, labels={"tier": "a"}).status_code == 200
    return device


def hold_on(replica: ServerProcess, device: RawDevice) -> tuple[HeldPoll, int]:
    """A long poll held on `replica` (waiting there, counted by its watch)."""
    generation = RawDevice(replica.url, device.key).call(
        "GET", f"/v1/devices/{device.id}/desired").json()["generation"]  # fmt: skip
    poll = HeldPoll(device, replica.url, generation)

    def waiting() -> bool:
        body = httpx.get(f"{replica.url}/metrics", timeout=5).text
        return bool(re.search(r"^edgefleet_long_polls_waiting [1-9]", body, re.MULTILINE))

    wait_for(waiting, what="the long poll to wait on the replica")
    return poll, generation


def test_change_through_one_replica_wakes_a_long_poll_held_on_another(
    replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = replicas
    device = enrolled(b)
    before = woken_by_notify(a)
    poll, generation = hold_on(a, device)
    with b.client() as operator:
        operator.label_device(device.id, {"tier": "b"}, [])
    doc = poll.answer()
    assert doc["generation"] > generation
    assert doc["labels"] == {"tier": "b"}
    assert woken_by_notify(a) > before, "woken by B's NOTIFY, not by A's periodic re-read"


def test_listener_listens_again_after_its_connection_is_terminated(
    replicas: tuple[ServerProcess, ServerProcess], database_url: str
) -> None:
    a, b = replicas
    old = listener_pids(database_url)
    assert len(old) == 2, "each replica holds one listening connection"
    engine = create_engine(database_url)
    with engine.connect() as connection:
        for pid in old:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    engine.dispose()
    wait_for(lambda: len(set(listener_pids(database_url)) - set(old)) == 2,
             what="both replicas to listen again")  # fmt: skip
    device = enrolled(a)
    before = woken_by_notify(a)
    poll, _ = hold_on(a, device)
    with b.client() as operator:
        operator.label_device(device.id, {"tier": "c"}, [])
    assert poll.answer()["labels"] == {"tier": "c"}
    assert woken_by_notify(a) > before
