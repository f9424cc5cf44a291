"""Shared fixtures: a real control plane per test module, agents per test, admin client."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess
from tests.schedule import longest_modules_first, read_module_seconds

ADMIN_TOKEN = "test-admin-token-0123456789"


def pytest_sessionstart(session: pytest.Session) -> None:
    # Keep Hypothesis' example database out of the source tree.
    from hypothesis import settings

    settings.register_profile("edgefleet", deadline=None, database=None)
    settings.load_profile("edgefleet")
    # A run stopped with SIGTERM (a CI timeout, `kill`) unwinds as Ctrl-C does: the fixtures
    # stop every server and agent they started instead of leaving them to init.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--module-seconds-out",
        metavar="PATH",
        help="append each test's id, start and end to PATH (refreshes tests/module_seconds.txt"
        ": see tests/schedule.py)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The longest modules first (tests/schedule.py): make test's workers then end together.
    order = longest_modules_first([item.nodeid for item in items], read_module_seconds())
    items[:] = [items[i] for i in order]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    out = item.config.getoption("module_seconds_out")
    start = time.monotonic()  # one clock for every worker of a run (CLOCK_MONOTONIC)
    yield
    if out:
        with open(out, "a") as records:  # one short append per test: workers share the file
            records.write(json.dumps([item.nodeid, start, time.monotonic()]) + "\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real control plane on a free loopback port, shared by one test module."""
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", ADMIN_TOKEN)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[FleetClient]:
    with server.client() as client:
        yield client


class AgentFactory:
    def __init__(self, server: ServerProcess, base: Path):
        self.server = server
        self.base = base
        self.agents: list[AgentProcess] = []

    def __call__(
        self,
        name: str,
        enroll_token: str | None,
        labels: dict[str, str] | None = None,
        heartbeat_interval_s: float = 1.0,
        data_dir: Path | None = None,
        extra_args: list[str] | None = None,
        start: bool = True,
    ) -> AgentProcess:
        agent = AgentProcess(
            self.server.url,
            data_dir or self.base / name,
            enroll_token,
            name,
            labels,
            heartbeat_interval_s,
            extra_args,
        )
        if start:
            agent.start()
        self.agents.append(agent)
        return agent


@pytest.fixture
def agents(server: ServerProcess, tmp_path: Path) -> Iterator[AgentFactory]:
    """Start real agent processes; all are stopped when the test ends."""
    factory = AgentFactory(server, tmp_path)
    yield factory
    for agent in factory.agents:
        agent.stop()
