"""HTTP transport (the default): the `Transport` port over the agent's own HTTP/1.1 client
(`http_client.HttpClient`: keep-alive, at most 4 connections, standard library only)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from edgefleet.transport.http_client import ClientCertificate, HttpClient
from edgefleet.transport.http_proxy import ProxySettings
from edgefleet.transport.messages import Headers, TransportResponse, resolve_headers

_DEFAULT_HEADERS = {"content-type": "application/json"}
# How long the agent keeps an idle connection to the control plane: longer than a heartbeat
# interval (15 s by default), so heartbeats and telemetry reuse one connection instead of
# opening (with https: handshaking) a new one each time; shorter than the server's
# `keep_alive_s` (75 s) and than the idle timeouts of common load balancers (60 s and up),
# so the agent, not the server, closes an idle connection and a request rarely races a close.
CONTROL_PLANE_KEEPALIVE_S = 50.0


class HttpTransport:
    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 4,
        client: HttpClient | None = None,
        ca_file: Path | None = None,
        proxies: ProxySettings | None = None,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        """`client`: share a pool with other transports (the simulator); close() then leaves
        it open for its owner. `ca_file`: the CAs an https control plane's certificate is
        verified against (default: the system's trust store). `proxies`: forward proxies
        (default: none, direct connections). `client_certificate`: presented to an https
        control plane (mutual TLS) once its files exist."""
        self.base_url = base_url.rstrip("/")
        self._owns_client = client is None
        self._client = client or HttpClient(
            max_connections=max_connections,
            keepalive_s=CONTROL_PLANE_KEEPALIVE_S,
            ca_file=ca_file,
            proxies=proxies,
            client_certificate=client_certificate,
        )

    async def request(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: Headers,
        timeout_s: float,
    ) -> TransportResponse:
        return await self._client.request(
            method,
            self.base_url + target,
            body=body,
            headers=lambda: {**_DEFAULT_HEADERS, **resolve_headers(headers)},
            timeout_s=timeout_s,
        )

    async def download(
        self,
        target: str,
        headers: Headers,
        destination: Path,
        timeout_s: float,
    ) -> TransportResponse:
        async with self._client.stream(
            "GET", self.base_url + target, headers=headers, timeout_s=timeout_s
        ) as response:
            if response.status not in (200, 206):
                body = await response.read()
                return TransportResponse(response.status, body, response.headers)
            # A 206 continues the partial file; a 200 is the whole file from its start.
            async with contextlib.aclosing(response.iter_bytes()) as pieces:
                with destination.open("ab" if response.status == 206 else "wb") as sink:
                    async for piece in pieces:
                        sink.write(piece)
            return TransportResponse(response.status, b"", response.headers)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
