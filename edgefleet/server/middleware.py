"""ASGI middleware: request ids and the request body size limit.

The body is read here, up to the limit, before any route sees it: an oversized request is
answered 413 without touching the application, and a route can never observe half a body.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{8,64}")


def _error_response(status: int, code: str, message: str, request_id: str) -> tuple[dict, bytes]:
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}})
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID_HEADER.encode(), request_id.encode()),
        ],
    }
    return start, body.encode()


class RequestContextMiddleware:
    """Request ids for every request; the body limit for every request except those whose
    (method, path prefix) is in `streamed` — routes that stream large bodies themselves and
    enforce their own limits (blob uploads)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        streamed: tuple[tuple[str, str], ...] = (),
        larger: tuple[tuple[str, str, int], ...] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.streamed = streamed
        self.larger = larger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        method, path = scope["method"], scope["path"]
        if any(method == m and path.startswith(p) for m, p in self.streamed):
            await self.app(scope, receive, send_with_id)
            return
        limit = next(
            (n for m, p, n in self.larger if method == m and path.startswith(p)),
            self.max_body_bytes,
        )
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(send, request_id, declared, limit)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, request_id, str(size), limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)

    async def _refuse(self, send: Send, request_id: str, size: Any, limit: int) -> None:
        start, body = _error_response(
            413,
            "payload_too_large",
            f"request body of {size} bytes is over the limit of {limit} bytes",
            request_id,
        )
        await send(start)
        await send({"type": "http.response.body", "body": body})
