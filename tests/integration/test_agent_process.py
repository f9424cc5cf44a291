"""The agent's own process, as `edgefleet agent` starts it: lean imports, flags and errors.

An idle agent on a constrained device must not carry the operator CLI, the libraries that
only installs, model checks and deltas need, or httpx and its stack (it speaks HTTP with
edgefleet.transport.http_client); bench/agent/idle.py measures what that saves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli_runner import run_cli

# Loaded by the operator CLI, or only while installing a release, checking a model, applying
# a delta or running a workload: never by an idle agent. httpx and its dependencies: never
# by the agent at all.
NOT_WHILE_IDLE = [
    "typer", "rich", "click", "pygments", "pydantic", "pydantic_settings",
    "httpx", "httpcore", "anyio", "h11", "h2", "idna", "certifi", "sniffio",
    "tuf", "securesystemslib", "yaml", "numpy", "onnx", "onnxruntime",
    "edgefleet.cli", "edgefleet.server", "edgefleet.store", "edgefleet.artifacts.delta",
    "edgefleet.core.workloads.workload", "tarfile", "google.protobuf", "opentelemetry",
]  # fmt: skip

# Runs the real entry point (`python -m edgefleet.agent`) up to its first network step (it
# is not enrolled and has no token, so it stops there), sends a request with the agent's
# transport (plain and TLS, both refused), then lists what it had imported.
PROBE = """
import asyncio, json, runpy, sys
sys.argv = ["edgefleet.agent", *sys.argv[1:]]
try:
    runpy.run_module("edgefleet.agent", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code

from edgefleet.errors import Unavailable
from edgefleet.transport.http import HttpTransport

async def exchange(url):
    transport = HttpTransport(url)
    try:
        await transport.request("GET", "/healthz", b"", {}, 5)
    except Unavailable:
        pass
    await transport.close()

for url in ("http://127.0.0.1:9", "https://127.0.0.1:9"):
    asyncio.run(exchange(url))
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_the_agent_process_does_not_import_what_an_idle_agent_never_uses(
    tmp_path: Path,
) -> None:
    args = ["--server", "http://127.0.0.1:9", "--data-dir", str(tmp_path), "--statsd-port", "0"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 1, proc.stderr
    assert "this agent is not enrolled" in proc.stderr  # it got as far as connecting
    assert "edgefleet.agent.agent" in result["modules"]
    assert "edgefleet.transport.http_client" in result["modules"]
    loaded = {m for m in result["modules"] for p in NOT_WHILE_IDLE if m == p or
              m.startswith(p + ".")}  # fmt: skip
    assert not loaded, f"the idle agent imports {sorted(loaded)}"


def test_edgefleet_agent_help_lists_the_agent_flags() -> None:
    result = run_cli("agent", "--help")
    assert result.code == 0, result.stderr
    for flag in ("--server", "--enroll-token", "--label", "--simulated-battery",
                 "--telemetry-queue-max-rows", "EDGEFLEET_STATSD_PORT"):  # fmt: skip
        assert flag in result.stdout


def test_edgefleet_agent_reports_a_usage_error_with_status_2(tmp_path: Path) -> None:
    result = run_cli("agent", "--data-dir", str(tmp_path), "--latitude", "100")
    assert result.code == 2
    assert result.stderr == (
        "error: argument --latitude: 100.0 is not in the range -90..90 "
        "(usage; see edgefleet agent --help)\n"
    )
