"""The example inference workload as a real process on loopback, with models from
model_builder."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from edgefleet.agent.process_runtime import HostRuntime
from edgefleet.agent.supervisor import HealthCheckSpec, HealthState, ServiceSpec, Supervisor
from edgefleet.agent.telemetry.statsd import parse_line
from edgefleet.artifacts.model_builder import (
    build_faulty_mlp,
    build_mlp,
    build_nan_mlp,
    model_bytes,
    save_model,
)
from edgefleet.clock import SystemClock
from edgefleet.core.telemetry.windows import MetricKind

SERVER = [sys.executable, "-m", "edgefleet.examples.inference_server"]


class RunningServer:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url
        self.http = httpx.Client(base_url=url, trust_env=False, timeout=10.0)

    def infer(self, body: object) -> httpx.Response:
        return self.http.post("/infer", json=body)

    def health(self) -> httpx.Response:
        return self.http.get("/healthz")

    def stop(self) -> int:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(10)
        finally:
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """Start the workload on a free port; the fixture stops every one it started."""
    started: list[RunningServer] = []

    def start(*args: str, env: dict[str, str] | None = None) -> RunningServer:
        process = subprocess.Popen(
            [*SERVER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert process.stdout is not None
        first_line = process.stdout.readline()  # printed once the socket listens
        assert first_line.startswith("listening on http://"), first_line
        server = RunningServer(process, first_line.split()[-1])
        started.append(server)
        return server

    yield start
    for server in started:
        assert server.stop() == 0  # SIGTERM is a clean exit


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    save_model(build_mlp(), tmp_path / "good.onnx")
    save_model(build_nan_mlp(), tmp_path / "nan.onnx")
    save_model(build_faulty_mlp(bad_fraction=0.5), tmp_path / "faulty.onnx")
    return tmp_path


def reference_outputs(x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model_bytes(build_mlp()), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"x": x})[0]
    return result


def test_infer_and_health_counters(
    start_server: Callable[..., RunningServer], model_dir: Path
) -> None:
    model = model_dir / "good.onnx"
    # Configured through the environment, as the supervisor does.
    server = start_server(env={"EDGEFLEET_MODEL_PATH": str(model), "EDGEFLEET_SERVICE_PORT": "0"})
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)

    one = server.infer({"input": x[:1].tolist()})
    assert one.status_code == 200
    assert np.allclose(one.json()["outputs"]["y"], reference_outputs(x[:1]), atol=1e-5)
    assert one.json()["latency_ms"] >= 0
    both = server.infer({"inputs": {"x": x.tolist()}})
    assert np.allclose(both.json()["outputs"]["y"], reference_outputs(x), atol=1e-5)

    health = server.health()
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "reason": "",
        "requests": 2,
        "errors": 0,
        "client_errors": 0,
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "model_path": str(model.resolve()),
    }


def test_malformed_requests_are_client_errors_not_model_errors(
    start_server: Callable[..., RunningServer], model_dir: Path
) -> None:
    server = start_server("--model", str(model_dir / "good.onnx"), "--port", "0")
    cases = [
        (server.http.post("/infer", content=b"{not json"), "body is not JSON"),
        (server.infer({"input": [[1.0, 2.0, 3.0]]}), "input 'x' has shape [1, 3], declared"),
        (server.infer({"input": [[1.0, 2.0], [3.0]]}), "not a rectangular array"),
        (server.infer({"inputs": {"z": [[0.0] * 4]}}), "unknown input 'z'"),
        (server.infer({"data": 1}), "expected 'inputs'"),
        (server.infer([1, 2]), "body must be a JSON object"),
    ]
    for response, reason in cases:
        assert response.status_code == 400
        assert reason in response.json()["reason"]
    assert server.http.get("/nowhere").status_code == 404
    counters = server.health().json()
    assert (counters["requests"], counters["errors"], counters["client_errors"]) == (6, 0, 6)
    assert counters["status"] == "ok"


def test_a_model_that_outputs_nan_is_unhealthy(
    start_server: Callable[..., RunningServer], model_dir: Path
) -> None:
    server = start_server("--model", str(model_dir / "nan.onnx"), "--port", "0")
    health = server.health()
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert health.json()["reason"] == "self-test output 'y' is not finite (NaN or inf)"
    response = server.infer({"input": [[0.1, 0.2, 0.3, 0.4]]})
    assert response.status_code == 500
    assert response.json()["reason"] == "output 'y' is not finite (NaN or inf)"
    assert server.health().json()["errors"] == 1


def test_a_faulty_model_fails_some_requests_and_they_are_counted(
    start_server: Callable[..., RunningServer], model_dir: Path
) -> None:
    server = start_server("--model", str(model_dir / "faulty.onnx"), "--port", "0")
    assert server.health().status_code == 200  # the self-test input is in the good region
    rows = np.random.default_rng(5).standard_normal((30, 4)).astype(np.float32)
    statuses = [server.infer({"input": [row.tolist()]}).status_code for row in rows]
    # bad_fraction=0.5: rows whose first feature is above the median (0) come out NaN.
    assert statuses == [500 if row[0] > 0 else 200 for row in rows]
    assert 0 < statuses.count(500) < len(rows)
    counters = server.health().json()
    assert (counters["requests"], counters["errors"]) == (30, statuses.count(500))


def test_statsd_lines_are_sent_per_request(
    start_server: Callable[..., RunningServer], model_dir: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as statsd:
        statsd.bind(("127.0.0.1", 0))
        statsd.settimeout(10.0)
        address = f"127.0.0.1:{statsd.getsockname()[1]}"
        server = start_server(
            "--model", str(model_dir / "faulty.onnx"), "--port", "0", "--statsd", address
        )
        assert server.infer({"input": [[-1.0, 0.0, 0.0, 0.0]]}).status_code == 200
        assert server.infer({"input": [[5.0, 0.0, 0.0, 0.0]]}).status_code == 500
        assert server.infer({"input": "nonsense"}).status_code == 400
        datagrams = [statsd.recv(8192).decode() for _ in range(3)]
    points = [[parse_line(line) for line in d.splitlines()] for d in datagrams]
    names = [[(p.name, p.kind) for p in datagram] for datagram in points]
    assert names == [
        [("inference.requests", MetricKind.COUNTER), ("inference.latency_ms", MetricKind.TIMING)],
        [
            ("inference.requests", MetricKind.COUNTER),
            ("inference.errors", MetricKind.COUNTER),
            ("inference.latency_ms", MetricKind.TIMING),
        ],
        [
            ("inference.requests", MetricKind.COUNTER),
            ("inference.client_errors", MetricKind.COUNTER),
        ],
    ]
    assert all(p.value >= 0 for datagram in points for p in datagram)


def test_statsd_without_a_listener_never_fails_a_request(
    start_server: Callable[..., RunningServer], model_dir: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
    server = start_server(
        "--model", str(model_dir / "good.onnx"), "--port", "0", "--statsd", address
    )
    for _ in range(3):  # ICMP port unreachable comes back as an error on the next send
        assert server.infer({"input": [[0.0, 0.0, 0.0, 0.0]]}).status_code == 200


def test_a_model_that_cannot_load_exits_with_the_reason(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(random.Random(1).randbytes(500))
    result = subprocess.run(
        [*SERVER, "--model", str(corrupt), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"cannot load model {corrupt}: INVALID_PROTOBUF")


def test_supervised_workload_reports_health_and_counters(model_dir: Path, tmp_path: Path) -> None:
    """The installer's view: the supervisor runs the workload and probes its /healthz."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def scenario() -> None:
        runtime = HostRuntime()
        check = HealthCheckSpec(http_url=f"http://127.0.0.1:{port}/healthz", interval_s=0.2)
        spec = ServiceSpec(
            "inference",
            SERVER,
            env={
                "EDGEFLEET_MODEL_PATH": str(model_dir / "nan.onnx"),
                "EDGEFLEET_SERVICE_PORT": str(port),
            },
            log_path=tmp_path / "inference.log",
            health=check,
            memory_limit_mb=1024,
        )
        try:
            async with Supervisor(runtime, SystemClock(), random.Random(0)) as supervisor:
                await supervisor.ensure(spec)
                for _ in range(200):
                    probe = await supervisor.probe("inference")
                    if probe.detail.startswith("HTTP"):
                        break
                    await asyncio.sleep(0.05)
                assert probe.health is HealthState.FAILING
                assert probe.detail == "HTTP 503: self-test output 'y' is not finite (NaN or inf)"
                assert (probe.requests, probe.errors) == (0, 0)
        finally:
            await runtime.close()
        assert "listening on" in (tmp_path / "inference.log").read_text()

    asyncio.run(scenario())
