"""A man in the middle on plain HTTP, on a thread of its own: forwards each request to the
control plane and hands every response to `tamper`, which may rewrite it before the client
sees it; `forgeries` rewrite the body of 200 answers by the path's ending. The attack tests
put it between a real agent and a real server, and between the operators' CLI and a
server (a control plane that lies)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.relay import LoopbackListener


@dataclass
class Exchange:
    """One request and its response as they crossed the wire (the response as the server
    sent it; `tamper` may change status, headers and body)."""

    method: str
    target: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Tamper = Callable[[Exchange], None]
Forgery = Callable[[bytes], bytes]


class HttpMitm(LoopbackListener):
    def __init__(self, server_url: str, tamper: Tamper | None = None) -> None:
        super().__init__(server_url)
        self.tamper = tamper
        self.forgeries: dict[str, Forgery] = {}
        self.seen: list[Exchange] = []

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request that went through."""
        return [(e.method, e.target.split("?")[0]) for e in self.seen]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        self._writers += [writer, up_writer]
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, headers = _parse_head(head)
                method, target, _ = request_line.split(" ", 2)
                body = await _read_body(reader, headers, "")
                if headers.pop("transfer-encoding", None) is not None:
                    headers["content-length"] = str(len(body))
                headers.pop("accept-encoding", None)  # plain bodies, so they can be read
                up_writer.write(_head(request_line, headers) + body)
                await up_writer.drain()
                status_line, response_headers = _parse_head(await up_reader.readuntil(b"\r\n\r\n"))
                response_body = await _read_body(up_reader, response_headers, method)
                exchange = Exchange(method, target, int(status_line.split(" ")[1]),
                                    response_headers, response_body)  # fmt: skip
                if self.tamper is not None:
                    self.tamper(exchange)
                path = target.split("?")[0]
                for suffix, forge in self.forgeries.items():
                    if exchange.status == 200 and path.endswith(suffix):
                        exchange.body = forge(exchange.body)
                self.seen.append(exchange)
                out = dict(exchange.headers)
                out.pop("transfer-encoding", None)
                if exchange.status != 304:
                    out["content-length"] = str(len(exchange.body))
                writer.write(_head(f"HTTP/1.1 {exchange.status} X", out) + exchange.body)
                await writer.drain()
        writer.close()
        up_writer.close()


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    first, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return first, headers


def _head(first: str, headers: dict[str, str]) -> bytes:
    lines = [first, *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], method: str) -> bytes:
    if method == "HEAD":
        return b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return bytes(body)
            body += chunk[:-2]
    return await reader.readexactly(int(headers.get("content-length", "0")))
