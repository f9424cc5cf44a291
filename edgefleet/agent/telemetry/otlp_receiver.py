"""The agent's OTLP/HTTP metrics endpoint: workloads instrumented with OpenTelemetry export
their KPIs to the agent as others send StatsD, and the points go into the same windows.

    POST /v1/metrics   Content-Type: application/x-protobuf | application/json
                       Content-Encoding: gzip (optional); Content-Length or chunked

It listens on loopback only, speaks HTTP/1.1 with keep-alive (an SDK's exporter keeps its
connection), and answers as an OTLP collector does: 200 with an ExportMetricsServiceResponse
(`partial_success` counts the points it could not take: malformed names or attributes,
summaries), 400 with a `google.rpc.Status` for a body it cannot read, 404, 405, 413 or 415
otherwise. The protocol buffers are read by `otlp.py`'s own decoder: no protobuf runtime
in the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass

from edgefleet.agent.telemetry.otlp_intake import OtlpIntake
from edgefleet.agent.telemetry.otlp_json import decode_json_request
from edgefleet.agent.telemetry.statsd import check_loopback
from edgefleet.clock import Clock
from edgefleet.core.telemetry.windows import Aggregator
from edgefleet.errors import InvalidInput
from edgefleet.transport import protowire as pw
from edgefleet.transport.http_wire import (
    ProtocolError,
    decode_gzip,
    parse_chunk_size,
    parse_header_field,
    strip_line_end,
)
from edgefleet.transport.otlp import (
    JSON_CONTENT_TYPE,
    NANOS,
    PROTOBUF_CONTENT_TYPE,
    decode_request,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 4318
METRICS_PATH = "/v1/metrics"
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_DECODED_BYTES = 16 * 1024 * 1024
MAX_HEADERS = 64
IDLE_TIMEOUT_S = 60.0
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                413: "Content Too Large", 415: "Unsupported Media Type"}  # fmt: skip


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _Reply:
    status: int
    content_type: str
    body: bytes
    close: bool = False


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = parse_chunk_size(await reader.readline())
            if len(body) + size > MAX_BODY_BYTES:
                raise _HttpError(413, f"body over {MAX_BODY_BYTES} bytes")
            if size == 0:
                while strip_line_end(await reader.readline(), "trailer"):
                    pass
                return bytes(body)
            body += await reader.readexactly(size)
            strip_line_end(await reader.readline(), "chunk end")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise ProtocolError(f"bad Content-Length {length_text[:20]!r}")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise _HttpError(413, f"body over {MAX_BODY_BYTES} bytes")
    return await reader.readexactly(length)


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    line = await reader.readline()
    if not line:
        return None
    parts = strip_line_end(line, "request line").decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ProtocolError("malformed request line")
    headers: dict[str, str] = {}
    while True:
        field = await reader.readline()
        if field in (b"\r\n", b"\n"):
            break
        if len(headers) >= MAX_HEADERS:
            raise ProtocolError("too many header fields")
        name, value = parse_header_field(field)
        headers[name] = value
    if parts[2] == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
        headers["connection"] = "close"
    return _Request(parts[0], parts[1].split("?", 1)[0], headers, await _read_body(reader, headers))


def _status_body(content_type: str, message: str) -> bytes:
    """A google.rpc.Status (code 3, INVALID_ARGUMENT) as OTLP answers a refused request."""
    if content_type == JSON_CONTENT_TYPE:
        return json.dumps({"code": 3, "message": message}).encode()
    status = pw.Writer()
    status.varint(1, 3)
    status.string(2, message)
    return bytes(status.data)


def _success_body(content_type: str, rejected: int, message: str) -> bytes:
    if content_type == JSON_CONTENT_TYPE:
        partial = {"rejectedDataPoints": str(rejected), "errorMessage": message}
        return json.dumps({"partialSuccess": partial} if rejected else {}).encode()
    response = pw.Writer()
    if rejected:
        partial_success = pw.Writer()
        partial_success.varint(1, rejected)
        partial_success.string(2, message)
        response.message(1, partial_success)
    return bytes(response.data)


class OtlpReceiver:
    """A running endpoint; `close()` stops it and its connections."""

    def __init__(self, intake: OtlpIntake, clock: Clock) -> None:
        self.intake = intake
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.requests = 0
        self.refused = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def listen(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                try:
                    request = await asyncio.wait_for(_read_request(reader), IDLE_TIMEOUT_S)
                except _HttpError as e:
                    await self._send(writer, _Reply(e.status, "text/plain", e.message.encode(),
                                                    close=True))  # fmt: skip
                    return
                if request is None:
                    return
                reply = self._handle(request)
                await self._send(writer, reply)
                if reply.close or request.headers.get("connection", "").lower() == "close":
                    return
        except (ProtocolError, asyncio.IncompleteReadError, ValueError, TimeoutError,
                ConnectionError):  # fmt: skip
            # ValueError: a line over the stream's limit.
            return
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, reply: _Reply) -> None:
        head = (
            f"HTTP/1.1 {reply.status} {_STATUS_TEXT[reply.status]}\r\n"
            f"Content-Type: {reply.content_type}\r\nContent-Length: {len(reply.body)}\r\n"
            + ("Connection: close\r\n" if reply.close else "")
            + "\r\n"
        )
        writer.write(head.encode("latin-1") + reply.body)
        await writer.drain()

    def _handle(self, request: _Request) -> _Reply:
        self.requests += 1
        if request.path != METRICS_PATH:
            self.refused += 1
            return _Reply(404, "text/plain", b"only /v1/metrics is served here")
        if request.method != "POST":
            self.refused += 1
            return _Reply(405, "text/plain", b"POST OTLP metrics to /v1/metrics")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (PROTOBUF_CONTENT_TYPE, JSON_CONTENT_TYPE):
            self.refused += 1
            return _Reply(415, "text/plain",
                          b"send application/x-protobuf or application/json")  # fmt: skip
        try:
            body = request.body
            encoding = request.headers.get("content-encoding", "identity").lower()
            if encoding == "gzip":
                body = decode_gzip(body, MAX_DECODED_BYTES)
            elif encoding != "identity":
                raise InvalidInput(f"content encoding {encoding!r} is not supported")
            decode = decode_json_request if content_type == JSON_CONTENT_TYPE else decode_request
            metrics = decode(body)
        except (InvalidInput, ProtocolError) as e:
            self.refused += 1
            log.warning("OTLP export refused", extra={"error": str(e)})
            return _Reply(400, content_type, _status_body(content_type, str(e)))
        stats = self.intake.stats
        before = stats.malformed + stats.unsupported
        self.intake.take(metrics, self._clock.now())
        rejected = stats.malformed + stats.unsupported - before
        message = ("points with bad names or attributes, or summaries, are not taken"
                   if rejected else "")  # fmt: skip
        return _Reply(200, content_type, _success_body(content_type, rejected, message))


def otlp_env(address: str | None) -> dict[str, str]:
    """What points a workload's OpenTelemetry SDK at the agent listening on `address`
    (`127.0.0.1:PORT`): its metrics exporter only, as traces and logs are not taken here."""
    if not address:
        return {}
    url = f"http://{address}"
    return {
        "EDGEFLEET_OTLP": url,
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": url + METRICS_PATH,
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
    }


async def start_otlp_receiver(
    aggregator: Aggregator, clock: Clock, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT
) -> OtlpReceiver:
    """Listen for OTLP/HTTP metrics on loopback `host:port` (port 0: any free port)."""
    check_loopback(host, "otlp_host")
    started_ns = int(clock.now().timestamp() * NANOS)
    receiver = OtlpReceiver(OtlpIntake(aggregator, started_ns), clock)
    await receiver.listen(host, port)
    return receiver
