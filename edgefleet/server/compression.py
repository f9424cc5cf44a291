"""Response compression: gzip for JSON and text answers when the client accepts it.

Desired-state documents and TUF metadata (what a device receives, apart from its downloads)
are JSON that gzip halves; operator listings shrink 4-20x (audit records 4x, the OpenAPI
document 7x, a device list 20x). Only whole answers (one body message) of at least
`MIN_BYTES` in a compressible media type are compressed, so heartbeat answers (a few dozen
bytes) cost no CPU, and blobs, deltas and checkpoints (binary, ranged, already compressed or
incompressible) pass through untouched, as does anything streamed. An answer marked
`Cache-Control: no-store` (a newly minted token's secret) is never compressed: the length
of a compressed secret beside text an attacker chose can betray it (BREACH).
"""

from __future__ import annotations

import re
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MIN_BYTES = 512  # a desired-state document is 0.5-1 KB and halves; smaller gains little
LEVEL = 6
COMPRESSIBLE = re.compile(rb"(application/(json|problem\+json)|text/[a-z.+-]+)\s*(;|\Z)")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value allows gzip: `gzip` with q > 0, or, when gzip is not
    named, `*` with q > 0 (RFC 9110, 12.5.3)."""
    qualities: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        quality = 1.0
        name, _, value = params.partition("=")
        if name.strip() == "q":
            try:
                quality = float(value)
            except ValueError:
                quality = 0.0
        qualities[coding.strip()] = quality
    return qualities.get("gzip", qualities.get("*", 0.0)) > 0


def gzip_bytes(data: bytes) -> bytes:
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    return compressor.compress(data) + compressor.flush()


class ResponseCompressionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        wanted = any(
            name == b"accept-encoding" and accepts_gzip(value.decode("latin-1"))
            for name, value in scope["headers"]
        )
        start: Message | None = None

        async def compressing_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message  # held until the body shows whether it is whole
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            held, start = start, None
            headers = list(held.get("headers", []))
            body = message.get("body", b"")
            if not _compressible(headers) or message.get("more_body", False):
                await send(held)
                await send(message)
                return
            if wanted and len(body) >= MIN_BYTES:
                body = gzip_bytes(body)
                headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
                headers.append((b"content-encoding", b"gzip"))
                headers.append((b"content-length", str(len(body)).encode()))
            headers.append((b"vary", b"accept-encoding"))
            await send({**held, "headers": headers})
            await send({**message, "body": body})

        await self.app(scope, receive, compressing_send)


def _compressible(headers: list[tuple[bytes, bytes]]) -> bool:
    fields = {k.lower(): v.lower() for k, v in headers}
    if b"content-encoding" in fields or b"no-store" in fields.get(b"cache-control", b""):
        return False
    return COMPRESSIBLE.match(fields.get(b"content-type", b"")) is not None
