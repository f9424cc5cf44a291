"""The example model-serving workload: a tiny ONNX inference HTTP server.

    python -m edgefleet.examples.inference_server --model PATH --port N \\
        [--host 127.0.0.1] [--statsd 127.0.0.1:8125] [--state-dir DIR]

Flags fall back to EDGEFLEET_MODEL_PATH, EDGEFLEET_SERVICE_PORT, EDGEFLEET_STATSD and
EDGEFLEET_STATE_DIR. Port 0 picks a free port; the first line on stdout is always
`listening on http://HOST:PORT`.

At start the model is loaded with onnxruntime (exit status 1 and a one-line reason on stderr
if it cannot be) and run once on generated input (zeros, as the sandbox check does). Outputs
that are not finite make the server unhealthy: it keeps serving, and /healthz says why.

    POST /infer    {"inputs": {"x": [[...]]}}   or {"input": [[...]]} for one-input models
                   200 {"outputs": {"y": [[...]]}, "latency_ms": 0.3}
                   400 malformed request (a client error: not the model's fault)
                   500 the model failed or produced NaN/inf (a model error)
    GET /healthz   200|503 {"status": "ok"|"unhealthy", "reason", "requests", "errors",
                            "client_errors", "model_sha256", "model_path"}

    POST /checkpoint   write the server's state to `STATE_DIR/checkpoint.json` (the agent
                   calls it before archiving the state directory for a migration)
                   200 {"path", "requests"}; 404 without a state directory

With a state directory, /healthz also reports `state_dir` and the checkpoint found there at
start (`restored`: what a migrated replica brought with it, or null).

`requests` counts every /infer request, `errors` the model errors among them; the installer's
health window computes an error rate from the two. With --statsd, every request also sends
`inference.requests` and `inference.errors` (counters) and `inference.latency_ms` (timing)
as one UDP datagram, fire-and-forget.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from edgefleet.agent.sandbox_check import NUMPY_TYPES, describe_error, generate_inputs

MAX_BODY_BYTES = 16 * 1024 * 1024


class ClientError(Exception):
    """A request the server cannot use: answered with 400, never counted as a model error."""


class ModelServer:
    """The model, its counters and its health; what the HTTP handler calls."""

    def __init__(self, model_path: Path, statsd: StatsdSender | None = None) -> None:
        import onnxruntime as ort

        # Resolved: behind an A/B slot symlink, this names the slot actually served.
        self.model_path = model_path.resolve()
        self.model_sha256 = _sha256_of(model_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = self._session.get_inputs()
        self._output_names = [arg.name for arg in self._session.get_outputs()]
        self._statsd = statsd
        self._lock = threading.Lock()
        self.requests = self.errors = self.client_errors = 0
        self.unhealthy_reason = self._self_test()

    def _self_test(self) -> str:
        try:
            values = self._session.run(self._output_names, generate_inputs(self._session))
        except Exception as e:
            return f"self-test inference failed: {describe_error(e)}"
        bad = _non_finite_output(self._output_names, values)
        return f"self-test output {bad!r} is not finite (NaN or inf)" if bad else ""

    def health(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            body = {
                "status": "unhealthy" if self.unhealthy_reason else "ok",
                "reason": self.unhealthy_reason,
                "requests": self.requests,
                "errors": self.errors,
                "client_errors": self.client_errors,
                "model_sha256": self.model_sha256,
                "model_path": str(self.model_path),
            }
        return (503 if self.unhealthy_reason else 200), body

    def infer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one /infer request body: (status, JSON response)."""
        try:
            feeds = self._parse(body)
        except ClientError as e:
            self._count(client_error=True)
            return 400, {"error": "bad_request", "reason": str(e)}
        started = time.perf_counter()
        try:
            values = self._session.run(self._output_names, feeds)
        except Exception as e:
            latency_ms = (time.perf_counter() - started) * 1000
            self._count(model_error=True, latency_ms=latency_ms)
            return 500, {"error": "model_error", "reason": f"inference failed: {describe_error(e)}"}
        latency_ms = (time.perf_counter() - started) * 1000
        bad = _non_finite_output(self._output_names, values)
        self._count(model_error=bool(bad), latency_ms=latency_ms)
        if bad:
            reason = f"output {bad!r} is not finite (NaN or inf)"
            return 500, {"error": "model_error", "reason": reason}
        outputs = {
            n: np.asarray(v).tolist() for n, v in zip(self._output_names, values, strict=True)
        }
        return 200, {"outputs": outputs, "latency_ms": round(latency_ms, 3)}

    def _parse(self, body: bytes) -> dict[str, np.ndarray]:
        try:
            request = json.loads(body)
        except ValueError as e:
            raise ClientError(f"body is not JSON: {e}") from None
        if not isinstance(request, dict):
            raise ClientError("body must be a JSON object")
        if "inputs" in request:
            given = request["inputs"]
            if not isinstance(given, dict):
                raise ClientError("'inputs' must be an object of input name -> nested list")
        elif "input" in request:
            if len(self._inputs) != 1:
                names = ", ".join(arg.name for arg in self._inputs)
                raise ClientError(f"the model has several inputs ({names}): use 'inputs'")
            given = {self._inputs[0].name: request["input"]}
        else:
            raise ClientError("expected 'inputs' (or 'input' for a one-input model)")
        declared = {arg.name: arg for arg in self._inputs}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ClientError(f"unknown input {unknown[0]!r}; the model takes {sorted(declared)}")
        return {name: _to_array(name, given.get(name), arg) for name, arg in declared.items()}

    def checkpoint(self, state_dir: Path) -> dict[str, Any]:
        """Write the counters to STATE_DIR/checkpoint.json (write, fsync, rename)."""
        with self._lock:
            state = {
                "requests": self.requests,
                "errors": self.errors,
                "model_sha256": self.model_sha256,
                "written_at": time.time(),
            }
        path = state_dir / "checkpoint.json"
        part = state_dir / "checkpoint.json.part"
        with open(part, "w") as stream:
            json.dump(state, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(part, path)
        return {"path": str(path), "requests": state["requests"]}

    def count_client_error(self) -> None:
        """Count a request refused before its body was read (e.g. no Content-Length)."""
        self._count(client_error=True)

    def _count(
        self,
        *,
        model_error: bool = False,
        client_error: bool = False,
        latency_ms: float | None = None,
    ) -> None:
        with self._lock:
            self.requests += 1
            self.errors += model_error
            self.client_errors += client_error
        if self._statsd is not None:
            lines = ["inference.requests:1|c"]
            if model_error:
                lines.append("inference.errors:1|c")
            if client_error:
                lines.append("inference.client_errors:1|c")
            if latency_ms is not None:
                lines.append(f"inference.latency_ms:{latency_ms:.3f}|ms")
            self._statsd.send(lines)


def _to_array(name: str, value: Any, arg: Any) -> np.ndarray:
    if value is None:
        raise ClientError(f"missing input {name!r}")
    dtype = NUMPY_TYPES.get(arg.type)
    if dtype is None:
        raise ClientError(f"input {name!r} has type {arg.type}, which this server cannot feed")
    try:
        array = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as e:
        raise ClientError(f"input {name!r} is not a rectangular array of numbers: {e}") from None
    declared = list(arg.shape or [])
    if arg.shape is not None and (
        array.ndim != len(declared)
        or any(isinstance(d, int) and d != a for a, d in zip(array.shape, declared, strict=True))
    ):
        shown = ", ".join(str(d) for d in declared)
        raise ClientError(f"input {name!r} has shape {list(array.shape)}, declared [{shown}]")
    return array


def _non_finite_output(names: list[str], values: list[Any]) -> str | None:
    """The name of the first floating-point output holding NaN or inf, if any."""
    for name, value in zip(names, values, strict=True):
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            return name
    return None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class StatsdSender:
    """Fire-and-forget StatsD over UDP: a non-blocking socket whose errors are ignored."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def send(self, lines: list[str]) -> None:
        # Metrics must never fail or slow down a request: a full buffer or no listener is fine.
        with contextlib.suppress(OSError):
            self._socket.sendto("\n".join(lines).encode(), self._address)

    def close(self) -> None:
        self._socket.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/healthz":
            self._reply(404, {"error": "not_found", "reason": f"no route {self.path}"})
            return
        status, body = self.server.model.health()
        if self.server.state_dir is not None:
            body["state_dir"] = str(self.server.state_dir)
            body["restored"] = self.server.restored
        self._reply(status, body)

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] == "/checkpoint":
            state_dir = self.server.state_dir
            if state_dir is None:
                self._reply(404, {"error": "not_found", "reason": "no state directory"})
            else:
                self._reply(200, self.server.model.checkpoint(state_dir))
            return
        if self.path.split("?", 1)[0] != "/infer":
            self._reply(404, {"error": "not_found", "reason": f"no route {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.server.model.count_client_error()
            reason = f"a Content-Length of at most {MAX_BODY_BYTES} bytes is required"
            self.close_connection = True
            self._reply(400, {"error": "bad_request", "reason": reason})
            return
        self._reply(*self.server.model.infer(self.rfile.read(length)))

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the workload's log; counters tell the story


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], model: ModelServer, state_dir: Path | None = None
    ) -> None:
        super().__init__(address, _Handler)
        self.model = model
        self.state_dir = state_dir
        self.restored: dict[str, Any] | None = None
        if state_dir is not None:
            with contextlib.suppress(OSError, ValueError):
                self.restored = json.loads((state_dir / "checkpoint.json").read_text())


def _parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgefleet.examples.inference_server")
    parser.add_argument("--model", default=os.environ.get("EDGEFLEET_MODEL_PATH"))
    parser.add_argument("--port", type=int, default=os.environ.get("EDGEFLEET_SERVICE_PORT"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--statsd", default=os.environ.get("EDGEFLEET_STATSD"))
    parser.add_argument("--state-dir", default=os.environ.get("EDGEFLEET_STATE_DIR"))
    args = parser.parse_args(argv)
    if args.model is None or args.port is None:
        parser.error("--model and --port are required (or EDGEFLEET_MODEL_PATH/_SERVICE_PORT)")
    statsd = None
    if args.statsd:
        try:
            statsd = StatsdSender(*_parse_address(args.statsd))
        except (ValueError, OSError) as e:
            parser.error(f"--statsd: {e}")
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    try:
        model = ModelServer(Path(args.model), statsd)
    except Exception as e:
        print(f"cannot load model {args.model}: {describe_error(e)}", file=sys.stderr)
        return 1
    state_dir = None
    if args.state_dir:
        state_dir = Path(args.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
    server = _Server((args.host, int(args.port)), model, state_dir)
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    if model.unhealthy_reason:
        print(f"unhealthy: {model.unhealthy_reason}", flush=True)
    # SIGTERM (the supervisor's stop) ends serve_forever like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if statsd is not None:
            statsd.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
