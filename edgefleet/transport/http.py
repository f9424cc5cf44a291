"""HTTP transport (the default): httpx over HTTP/1.1 with keep-alive."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx

from edgefleet.errors import Unavailable
from edgefleet.transport.messages import TransportResponse

DOWNLOAD_CHUNK_BYTES = 1 << 16


class HttpTransport:
    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 4,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """`client`: share a pool with other transports (the simulator); it must have
        `base_url` set, and close() then leaves it open for its owner."""
        self.base_url = base_url.rstrip("/")
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            base_url=self.base_url,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=2),
            headers={"user-agent": "edgefleet-agent"},
        )

    async def request(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout_s: float,
    ) -> TransportResponse:
        try:
            response = await self._client.request(
                method,
                target,
                content=body or None,
                headers={"content-type": "application/json", **headers},
                timeout=timeout_s,
            )
        except httpx.TimeoutException as e:
            raise Unavailable(f"{self.base_url}: request timed out ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise Unavailable(f"{self.base_url}: {e or type(e).__name__}") from e
        return TransportResponse(response.status_code, response.content, dict(response.headers))

    async def download(
        self,
        target: str,
        headers: Mapping[str, str],
        destination: Path,
        timeout_s: float,
    ) -> TransportResponse:
        try:
            async with self._client.stream(
                "GET", target, headers=dict(headers), timeout=timeout_s
            ) as response:
                if response.status_code not in (200, 206):
                    body = await response.aread()
                    return TransportResponse(response.status_code, body, dict(response.headers))
                mode = "ab" if response.status_code == 206 else "wb"
                with destination.open(mode) as sink:
                    async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK_BYTES):
                        sink.write(chunk)
                return TransportResponse(response.status_code, b"", dict(response.headers))
        except httpx.TimeoutException as e:
            raise Unavailable(f"{self.base_url}: download timed out ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise Unavailable(f"{self.base_url}: {e or type(e).__name__}") from e

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
