"""A small forward proxy for tests (a stand-in for squid or tinyproxy): CONNECT tunnels and
absolute-form http requests, optional Basic credentials, and a host map so that a made-up
name (`fleet.example`) reaches a loopback server — a request that did not go through the
proxy could not resolve it. Runs on its own event loop in a thread."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    authorization: str | None


@dataclass
class ForwardProxy:
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address to connect to
    credentials: tuple[str, str] | None = None
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _open: set[asyncio.StreamWriter] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ForwardProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self.close_connections()
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def start_async(self) -> asyncio.Server:
        """Serve on the running loop instead (async tests); the caller closes the server."""
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def close_connections(self) -> None:
        """Abort every connection still open, both sides (the server's close leaves them)."""
        for writer in list(self._open):
            writer.transport.abort()

    def _address(self, host: str) -> str:
        return self.hosts.get(host, host)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *fields = head.decode("latin-1").split("\r\n")[:-2]
                method, target, _ = line.split(" ")
                headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
                authorization = headers.get("proxy-authorization")
                self.seen.append(Seen(method, target, authorization))
                if not self._authorized(authorization):
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'proxy-authenticate: Basic realm="test"\r\ncontent-length: 0\r\n\r\n'
                    )
                    await writer.drain()
                    continue
                if method == "CONNECT":
                    await self._tunnel(target, reader, writer)
                    return
                if not await self._forward(method, target, fields, reader, writer):
                    return
        finally:
            self._open.discard(writer)
            writer.close()

    def _authorized(self, authorization: str | None) -> bool:
        if self.credentials is None:
            return True
        expected = base64.b64encode(":".join(self.credentials).encode()).decode()
        return authorization == f"Basic {expected}"

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, _, port = target.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self._address(host.strip("[]")), int(port)
            )
            self._open.add(up_writer)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._open.discard(up_writer)
            up_writer.close()

    async def _forward(
        self,
        method: str,
        target: str,
        fields: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Relay one absolute-form request on a connection of its own; False to close."""
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            return False
        kept = [f for f in fields if not f.lower().startswith(("proxy-", "connection:"))]
        length = next(
            (int(f.partition(":")[2]) for f in fields if f.lower().startswith("content-length:")), 0
        )
        body = await reader.readexactly(length)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        up_reader, up_writer = await asyncio.open_connection(
            self._address(url.hostname), url.port or 80
        )
        self._open.add(up_writer)
        try:
            return await self._relay(method, path, kept, body, up_reader, up_writer, writer)
        finally:
            self._open.discard(up_writer)
            up_writer.close()

    async def _relay(
        self,
        method: str,
        path: str,
        kept: list[str],
        body: bytes,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        writer: asyncio.StreamWriter,
    ) -> bool:
        head = [f"{method} {path} HTTP/1.1", *kept, "connection: close"]
        up_writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await up_writer.drain()
        response_head = await up_reader.readuntil(b"\r\n\r\n")
        lines = [
            line
            for line in response_head[:-4].split(b"\r\n")
            if not line.lower().startswith((b"connection:", b"transfer-encoding:"))
        ]
        declared = [line for line in lines if line.lower().startswith(b"content-length:")]
        if declared:
            response_body = await up_reader.readexactly(int(declared[0].partition(b":")[2]))
        elif b"chunked" in response_head.lower():
            response_body = await _read_chunked(up_reader)
            lines.append(f"content-length: {len(response_body)}".encode())
        else:
            response_body = await up_reader.read()
            lines.append(f"content-length: {len(response_body)}".encode())
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + response_body)
        await writer.drain()
        return True


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16):
        out += await reader.readexactly(size)
        await reader.readexactly(2)
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass
    return bytes(out)
