"""One HTTP/1.1 connection over asyncio streams: open it (TCP, or TLS through the stdlib
`ssl` module; directly or through a forward proxy, tunnelled with CONNECT for TLS), send a
request, read the response head and then its body in pieces.

A connection is reusable only after a response was read to its end with keep-alive on
both sides; whoever holds it decides (`HttpClient` returns it to its pool or closes it).
It records whether any request byte went out and any response byte came in, which is
what decides whether a failed request may be repeated on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from edgefleet.transport.http_wire import (
    MAX_HEAD_BYTES,
    MAX_HEADER_FIELDS,
    MAX_LINE_BYTES,
    MAX_TRAILER_FIELDS,
    Framing,
    Origin,
    ProtocolError,
    ResponseHead,
    build_response_head,
    parse_chunk_size,
    parse_header_field,
    parse_status_line,
    strip_line_end,
)

if TYPE_CHECKING:
    import ssl

    from edgefleet.transport.http_proxy import Proxy

CHUNK_BYTES = 1 << 16  # the largest piece of a body handed out at once
STREAM_LIMIT_BYTES = 1 << 16  # the stream reader's buffer (and longest line it looks for)
MAX_INFORMATIONAL = 8  # 1xx responses skipped before the final one


class TunnelRefused(ConnectionError):
    """A proxy answered CONNECT with something other than 2xx."""


class Connection:
    def __init__(
        self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.origin = origin
        self._reader = reader
        self._writer = writer
        self.requests = 0  # requests started on this connection
        self.sent_any = False  # of the current request
        self.received_any = False  # of the current response
        self.idle_since_s = time.monotonic()

    @classmethod
    async def open(
        cls, origin: Origin, tls: ssl.SSLContext | None, proxy: Proxy | None = None
    ) -> Connection:
        """Connect (and complete the TLS handshake, verifying the server's certificate
        against `tls` and its name against the origin's host). Through `proxy`: a TCP
        connection to the proxy, and for TLS a CONNECT tunnel to the origin first, so that
        the handshake and everything after it run end to end with the origin."""
        if proxy is None:
            reader, writer = await asyncio.open_connection(
                origin.host,
                origin.port,
                ssl=tls,
                server_hostname=origin.host if tls is not None else None,
                limit=STREAM_LIMIT_BYTES,
            )
            return cls(origin, reader, writer)
        reader, writer = await asyncio.open_connection(
            proxy.origin.host, proxy.origin.port, limit=STREAM_LIMIT_BYTES
        )
        connection = cls(origin, reader, writer)
        try:
            if tls is not None:
                await connection._tunnel(proxy)
                await writer.start_tls(tls, server_hostname=origin.host)
        except BaseException:
            connection.close()
            raise
        return connection

    async def _tunnel(self, proxy: Proxy) -> None:
        """Ask the proxy for a tunnel to the origin (RFC 9110 9.3.6)."""
        host = f"[{self.origin.host}]" if ":" in self.origin.host else self.origin.host
        authority = f"{host}:{self.origin.port}"  # CONNECT always names the port
        fields = [("host", authority), *proxy.headers().items()]
        lines = [f"CONNECT {authority} HTTP/1.1", *(f"{n}: {v}" for n, v in fields)]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        await self._writer.drain()
        head = await self._read_one_head("CONNECT")
        if not 200 <= head.status < 300:
            raise TunnelRefused(
                f"proxy {proxy.origin.authority} refused the tunnel to {authority}: "
                f"{head.status} {head.reason}".rstrip()
            )
        self.received_any = False

    @property
    def reused(self) -> bool:
        """The current request is not the connection's first."""
        return self.requests > 1

    def idle_usable(self, keepalive_s: float) -> bool:
        """Whether an idle pooled connection may carry a request: the server has not closed
        it (as servers do with idle keep-alive connections) and it is not too old."""
        return (
            not self._writer.transport.is_closing()
            and not self._reader.at_eof()
            and time.monotonic() - self.idle_since_s < keepalive_s
        )

    async def send(self, head: bytes, body: bytes) -> None:
        self.requests += 1
        self.sent_any = self.received_any = False
        if self._writer.transport.is_closing() or self._reader.at_eof():
            # Writing to a closing transport is silently dropped: say so now, nothing sent.
            raise ConnectionResetError("the server closed the connection")
        self.sent_any = True
        self._writer.write(head + body if len(body) <= CHUNK_BYTES else head)
        if len(body) > CHUNK_BYTES:
            self._writer.write(body)
        await self._writer.drain()

    async def read_head(self, method: str) -> ResponseHead:
        """The final response head; informational (1xx) responses are skipped."""
        for _ in range(MAX_INFORMATIONAL + 1):
            head = await self._read_one_head(method)
            if not head.informational:
                return head
        raise ProtocolError(f"more than {MAX_INFORMATIONAL} informational responses")

    async def _read_one_head(self, method: str) -> ResponseHead:
        first = await self._read_line("status line")
        status_line = parse_status_line(first)
        total = len(first)
        fields: list[tuple[str, str]] = []
        while True:
            line = await self._read_line("header field")
            total += len(line)
            if total > MAX_HEAD_BYTES:
                raise ProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes")
            if line in (b"\r\n", b"\n"):
                return build_response_head(status_line, fields, method)
            if len(fields) == MAX_HEADER_FIELDS:
                raise ProtocolError(f"more than {MAX_HEADER_FIELDS} header fields")
            fields.append(parse_header_field(line))

    async def _read_line(self, what: str) -> bytes:
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            self.received_any = self.received_any or bool(e.partial)
            if not self.received_any:
                raise ConnectionResetError("the server closed the connection") from None
            raise ProtocolError(f"the server closed the connection within a {what}") from None
        except asyncio.LimitOverrunError:
            self.received_any = True
            raise ProtocolError(f"{what} longer than {MAX_LINE_BYTES} bytes") from None
        self.received_any = True
        return line

    async def iter_body(self, head: ResponseHead) -> AsyncGenerator[bytes, None]:
        """The body in pieces of at most CHUNK_BYTES; ProtocolError if it ends early."""
        if head.framing is Framing.LENGTH:
            assert head.length is not None
            left = head.length
            while left:
                piece = await self._reader.read(min(CHUNK_BYTES, left))
                if not piece:
                    got, length = head.length - left, head.length
                    raise ProtocolError(
                        f"the server closed the connection after {got} of {length} body bytes"
                    )
                left -= len(piece)
                yield piece
        elif head.framing is Framing.CHUNKED:
            async with contextlib.aclosing(self._iter_chunked()) as pieces:
                async for piece in pieces:
                    yield piece
        elif head.framing is Framing.CLOSE:
            while piece := await self._reader.read(CHUNK_BYTES):
                yield piece

    async def _iter_chunked(self) -> AsyncGenerator[bytes, None]:
        while size := parse_chunk_size(await self._read_line("chunk-size line")):
            left = size
            while left:
                piece = await self._reader.read(min(CHUNK_BYTES, left))
                if not piece:
                    raise ProtocolError("the server closed the connection within a chunk")
                left -= len(piece)
                yield piece
            if strip_line_end(await self._read_line("chunk end"), "chunk end"):
                raise ProtocolError("chunk data not followed by a line break")
        for _ in range(MAX_TRAILER_FIELDS + 1):
            line = await self._read_line("trailer field")
            if line in (b"\r\n", b"\n"):
                return
            parse_header_field(line)  # checked, not kept
        raise ProtocolError(f"more than {MAX_TRAILER_FIELDS} trailer fields")

    def park(self) -> None:
        """Mark the connection idle (its response was read to the end)."""
        self.idle_since_s = time.monotonic()

    def close(self) -> None:
        """Close at once: nothing is awaited, nothing more is read."""
        self._writer.transport.abort()

    async def aclose(self, timeout_s: float = 1.0) -> None:
        """Close politely (a TLS close_notify), waiting a little for it."""
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), timeout_s)
        except (OSError, TimeoutError):
            self.close()
