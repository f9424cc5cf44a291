"""The agent behind a forward proxy: HTTPS_PROXY / HTTP_PROXY / NO_PROXY, CONNECT tunnels with
end-to-end TLS, absolute-form http, proxy credentials, refusals — with the HTTP client
against loopback servers, and a real agent process enrolling through the proxy.

The origins are named `fleet.example`, which only the proxy's host map resolves: a request
that bypassed the proxy could not connect at all."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from edgefleet.client import FleetClient
from edgefleet.errors import Unavailable
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.transport.http_client import HttpClient
from edgefleet.transport.http_proxy import ProxySettings
from tests.forward_proxy import ForwardProxy
from tests.integration.test_http_client import ScriptedServer, make_certificates, ok, scripted

NAME = "fleet.example"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def proxy_on_loop(credentials: tuple[str, str] | None = None) -> AsyncIterator[ForwardProxy]:
    proxy = ForwardProxy(hosts={NAME: "127.0.0.1"}, credentials=credentials)
    server = await proxy.start_async()
    async with server:
        try:
            yield proxy
        finally:
            proxy.close_connections()
            await asyncio.sleep(0.05)  # let the aborted connections' handlers finish


def through(proxy: ForwardProxy, *, user: str = "", no_proxy: str = "") -> ProxySettings:
    url = proxy.url.replace("http://", f"http://{user}@") if user else proxy.url
    return ProxySettings.from_environ({"HTTPS_PROXY": url, "HTTP_PROXY": url, "NO_PROXY": no_proxy})


def renamed(server: ScriptedServer) -> str:
    return server.url.replace("127.0.0.1", NAME)


@pytest.mark.anyio
async def test_http_goes_through_the_proxy_in_absolute_form() -> None:
    async with (
        scripted(lambda r: ok(r.target.encode())) as server,
        proxy_on_loop() as proxy,
        HttpClient(proxies=through(proxy)) as client,
    ):
        response = await client.get(renamed(server) + "/v1/x?y=1", timeout_s=5)
    assert (response.status, response.body) == (200, b"/v1/x?y=1")
    assert [(s.method, s.target) for s in proxy.seen] == [("GET", renamed(server) + "/v1/x?y=1")]
    assert server.requests[0].headers["host"] == renamed(server).removeprefix("http://")


@pytest.mark.anyio
async def test_https_is_tunnelled_and_the_origin_certificate_still_verified(
    tmp_path: Path,
) -> None:
    certificates = make_certificates(tmp_path, [x509.DNSName(NAME)])
    async with (
        scripted(lambda r: ok(b"secret"), tls=certificates.server) as server,
        proxy_on_loop(credentials=("edge", "p@ss")) as proxy,
    ):
        settings = through(proxy, user="edge:p%40ss")
        async with HttpClient(proxies=settings, ca_file=certificates.ca_file) as client:
            for _ in range(2):  # the tunnel is kept alive and reused
                response = await client.get(renamed(server) + "/v1/tuf/1.root.json", timeout_s=5)
                assert (response.status, response.body) == (200, b"secret")
        port = server.url.rsplit(":", 1)[1]
        assert [(s.method, s.target) for s in proxy.seen] == [("CONNECT", f"{NAME}:{port}")]
        assert proxy.seen[0].authorization == "Basic ZWRnZTpwQHNz"  # edge:p@ss
        # TLS ran end to end: the origin, not the proxy, saw the request.
        assert [r.target for r in server.requests] == ["/v1/tuf/1.root.json"] * 2
        # The name is still checked against the origin's certificate, through the tunnel.
        async with HttpClient(proxies=settings) as untrusting:
            with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(renamed(server), timeout_s=5)


@pytest.mark.anyio
async def test_a_proxy_refusal_is_unavailable_with_its_status(tmp_path: Path) -> None:
    async with (
        scripted(lambda r: ok()) as server,
        proxy_on_loop(credentials=("edge", "right")) as proxy,
    ):
        https_url = renamed(server).replace("http://", "https://")
        async with HttpClient(proxies=through(proxy, user="edge:wrong")) as client:
            with pytest.raises(Unavailable, match=r"refused the tunnel .* 407 Proxy Auth"):
                await client.get(https_url, timeout_s=5)
            response = await client.get(renamed(server), timeout_s=5)  # plain http: a response
            assert response.status == 407
        async with HttpClient(proxies=through(proxy, user="edge:right")) as client:
            with pytest.raises(Unavailable, match="502 Bad Gateway"):
                await client.get("https://nowhere.invalid:1/", timeout_s=5)
    assert not server.requests


@pytest.mark.anyio
async def test_no_proxy_and_loopback_connect_directly() -> None:
    async with (
        scripted(lambda r: ok()) as server,
        proxy_on_loop() as proxy,
        HttpClient(proxies=through(proxy, no_proxy="other.example,.example")) as client,
    ):
        with pytest.raises(Unavailable, match="cannot connect"):
            await client.get(renamed(server), timeout_s=5)  # excepted: direct, no DNS name
        assert (await client.get(server.url, timeout_s=5)).status == 200  # loopback
    assert proxy.seen == []
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_a_closed_proxy_is_unavailable_naming_it() -> None:
    async with proxy_on_loop() as proxy:
        settings = through(proxy)
    async with HttpClient(proxies=settings) as client:
        with pytest.raises(Unavailable, match=r"cannot connect through the proxy 127\.0\.0\.1"):
            await client.get(f"https://{NAME}/", timeout_s=5)


# -- a real agent behind the proxy ------------------------------------------------------------


@pytest.fixture
def forward_proxy() -> Iterator[ForwardProxy]:
    proxy = ForwardProxy(hosts={NAME: "127.0.0.1"}).start()
    yield proxy
    proxy.stop()


def test_an_agent_enrolls_and_reports_through_the_proxy(
    server: ServerProcess, admin: FleetClient, forward_proxy: ForwardProxy, tmp_path: Path
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    url = server.url.replace("127.0.0.1", NAME)
    agent = AgentProcess(
        url,
        tmp_path / "behind-proxy",
        token,
        "behind-proxy",
        env={
            "HTTP_PROXY": forward_proxy.url.replace("http://", "http://edge:s3cret@"),
            "NO_PROXY": "",
            "REQUEST_METHOD": "",
        },
    )
    agent.start()
    try:
        device: dict[str, Any] = wait_for(
            lambda: next((d for d in admin.list_devices() if d["name"] == "behind-proxy"), {}),
            what="enrollment through the proxy",
        )
        wait_for(
            lambda: admin.get_device(device["id"])["in_sync"],
            what="the agent to converge through the proxy",
        )
        targets = [s.target for s in forward_proxy.seen]
        assert f"{url}/v1/enroll" in targets
        assert f"{url}/v1/devices/{device['id']}/report" in targets
        assert {s.authorization for s in forward_proxy.seen} == {"Basic ZWRnZTpzM2NyZXQ="}
        log = agent.log()
        assert "using forward proxies" in log and "(with credentials)" in log
        assert "s3cret" not in log
    finally:
        agent.stop()


def test_a_malformed_proxy_setting_stops_the_agent_with_one_line(
    server: ServerProcess, tmp_path: Path
) -> None:
    agent = AgentProcess(
        server.url, tmp_path / "bad", None, "bad", env={"HTTPS_PROXY": "socks5://proxy:1080"}
    )
    agent.start()
    try:
        wait_for(lambda: not agent.running, what="the agent to exit")
        assert agent.stop() == 1
        assert "bad proxy in HTTPS_PROXY: socks5:// proxies are not supported" in agent.log()
    finally:
        agent.stop()
