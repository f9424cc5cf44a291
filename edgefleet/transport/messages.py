"""What crosses a transport: a response, and how an error response becomes an ApiError.

Shared by the agent's transports and the operator client, so both read the server's
`{"error": {"code", "message"}}` bodies the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgefleet.errors import ApiError

# Header fields, or a function giving them anew for each attempt to send a request (a signed
# request needs a fresh nonce if the transport sends it a second time).
Headers = Mapping[str, str] | Callable[[], Mapping[str, str]]


def resolve_headers(headers: Headers) -> Mapping[str, str]:
    return headers() if callable(headers) else headers


@dataclass(frozen=True)
class TransportResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def error_from_response(status: int, body: bytes) -> ApiError:
    """An ApiError carrying the server's code and message (or a summary of a non-JSON body)."""
    try:
        error = json.loads(body)["error"]
        return ApiError(status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip()[:200] or "no body"
        return ApiError(status, f"http_{status}", f"HTTP {status}: {text}")


class Transport(Protocol):
    """Carries one request to the control plane and returns its response.

    Raises edgefleet.errors.Unavailable when the peer cannot be reached; HTTP error statuses
    come back as responses, for the caller to interpret.
    """

    async def request(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: Headers,
        timeout_s: float,
    ) -> TransportResponse: ...

    async def download(
        self,
        target: str,
        headers: Headers,
        destination: Path,
        timeout_s: float,
    ) -> TransportResponse:
        """GET `target` into `destination`: appended after a 206 (a resumed range),
        written from the start after a 200. The response body is not kept in memory; an
        error response's body is returned for the caller to read."""
        ...

    async def close(self) -> None: ...
