"""The agent's HTTP/1.1 client and `HttpTransport` against real loopback servers whose every
answer the test writes byte for byte: keep-alive, framing, failures, resumable downloads,
TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgefleet.errors import Unavailable
from edgefleet.transport.http import HttpTransport
from edgefleet.transport.http_client import HttpClient

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which accepted connection (1, 2, ...) it came on


@dataclass(frozen=True)
class Answer:
    raw: bytes = b""  # written as is
    close: bool = False  # then close the connection
    hang: bool = False  # never answer (until the server stops)


def ok(body: bytes = b"hello", *extra: str, status: str = "200 OK") -> Answer:
    head = "".join(f"{line}\r\n" for line in extra)
    return Answer(f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode()
                  + body)  # fmt: skip


@dataclass
class ScriptedServer:
    answer: Callable[[Request], Answer | Awaitable[Answer]]
    url: str = ""
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *fields = head.decode("latin-1").split("\r\n")[:-2]
                method, target, _ = line.split(" ")
                headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                request = Request(method, target, headers, body, number)
                self.requests.append(request)
                answer = self.answer(request)
                if not isinstance(answer, Answer):
                    answer = await answer
                if answer.hang:
                    await self.stopping.wait()
                    return
                writer.write(answer.raw)
                await writer.drain()
                if answer.close:
                    return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(
    answer: Callable[[Request], Answer | Awaitable[Answer]], tls: ssl.SSLContext | None = None
) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(answer)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    async with listener:
        try:
            yield server
        finally:
            server.stopping.set()
            listener.close()


# -- keep-alive and framing -----------------------------------------------------------------


async def test_keep_alive_reuses_one_connection() -> None:
    async with scripted(lambda r: ok(r.target.encode())) as server, HttpClient() as client:
        for i in range(3):
            response = await client.get(f"{server.url}/n/{i}", timeout_s=5)
            assert (response.status, response.body) == (200, f"/n/{i}".encode())
    assert server.connections == 1
    assert server.requests[0].headers["user-agent"] == "edgefleet-agent"
    assert server.requests[0].headers["host"] == server.url.removeprefix("http://")


async def test_an_idle_connection_is_not_kept_beyond_keepalive() -> None:
    async with scripted(lambda r: ok()) as server, HttpClient(keepalive_s=0.05) as client:
        await client.get(server.url, timeout_s=5)
        await asyncio.sleep(0.1)
        await client.get(server.url, timeout_s=5)
    assert server.connections == 2


async def test_a_chunked_response_is_reassembled_and_the_connection_reused() -> None:
    chunked = Answer(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n")  # fmt: skip
    async with scripted(lambda r: chunked) as server, HttpClient() as client:
        first = await client.get(server.url, timeout_s=5)
        second = await client.get(server.url, timeout_s=5)
    assert first.body == second.body == b"hello, world"
    assert server.connections == 1


async def test_a_body_read_until_close_ends_the_connection() -> None:
    unframed = Answer(b"HTTP/1.1 200 OK\r\n\r\nall of it", close=True)
    async with scripted(lambda r: unframed) as server, HttpClient() as client:
        assert (await client.get(server.url, timeout_s=5)).body == b"all of it"
        assert (await client.get(server.url, timeout_s=5)).body == b"all of it"
    assert server.connections == 2


async def test_connection_close_is_honoured() -> None:
    async with scripted(lambda r: ok(b"x", "connection: close")) as server, HttpClient() as client:
        await client.get(server.url, timeout_s=5)
        await client.get(server.url, timeout_s=5)
    assert server.connections == 2


async def test_error_statuses_are_responses_with_their_bodies() -> None:
    body = b'{"error": {"code": "nope", "message": "no"}}'
    async with scripted(lambda r: ok(body, status="404 Not Found")) as server:
        transport = HttpTransport(server.url)
        response = await transport.request("POST", "/v1/x", b'{"a": 1}', {"x-sig": "s"}, 5)
        await transport.close()
    assert (response.status, response.body) == (404, body)
    sent = server.requests[0]
    assert (sent.method, sent.body, sent.headers["x-sig"]) == ("POST", b'{"a": 1}', "s")
    assert sent.headers["content-type"] == "application/json"


async def test_the_pool_never_opens_more_than_max_connections() -> None:
    async def slow(request: Request) -> Answer:
        await asyncio.sleep(0.05)
        return ok()

    async with scripted(slow) as server, HttpClient(max_connections=2) as client:
        await asyncio.gather(*(client.get(server.url, timeout_s=5) for _ in range(6)))
    assert server.connections == 2


async def test_an_unread_body_is_never_reused() -> None:
    async with scripted(lambda r: ok(b"x" * 100_000)) as server, HttpClient() as client:
        async with client.stream("GET", server.url, timeout_s=5) as response:
            assert response.status == 200  # the body is left unread
        assert (await client.get(server.url, timeout_s=5)).body == b"x" * 100_000
    assert server.connections == 2


# -- servers closing connections --------------------------------------------------------------


async def test_after_the_server_closes_an_idle_connection_the_next_request_succeeds() -> None:
    # Answers without `connection: close`, then closes: an idle keep-alive timeout.
    async with scripted(lambda r: Answer(ok().raw, close=True)) as server, HttpClient() as client:
        assert (await client.get(server.url, timeout_s=5)).status == 200
        await asyncio.sleep(0.05)
        assert (await client.get(server.url, timeout_s=5)).status == 200
    assert server.connections == 2


def drop_second_request_on_a_connection(server: ScriptedServer) -> Callable[[Request], Answer]:
    """The race of an idle timeout: the server closes just as a request arrives."""

    def answer(request: Request) -> Answer:
        on_connection = [r for r in server.requests if r.connection == request.connection]
        return Answer(close=True) if len(on_connection) == 2 else ok()

    return answer


async def test_a_get_that_meets_a_dying_keep_alive_connection_is_retried_once() -> None:
    async with scripted(lambda r: ok()) as server, HttpClient() as client:
        server.answer = drop_second_request_on_a_connection(server)
        await client.get(server.url, timeout_s=5)
        assert (await client.get(server.url + "/again", timeout_s=5)).status == 200
    assert [r.target for r in server.requests] == ["/", "/again", "/again"]
    assert server.connections == 2


async def test_a_retried_request_gets_its_headers_anew() -> None:
    """A signed request's retry needs a fresh signature: the server saw the first nonce."""
    attempts = iter(range(1, 10))
    async with scripted(lambda r: ok()) as server, HttpClient() as client:
        server.answer = drop_second_request_on_a_connection(server)
        await client.get(server.url, timeout_s=5)
        response = await client.request(
            "GET", server.url, headers=lambda: {"x-attempt": str(next(attempts))}, timeout_s=5
        )
    assert response.status == 200
    assert [r.headers.get("x-attempt") for r in server.requests] == [None, "1", "2"]
    assert server.connections == 2


async def test_a_post_that_was_sent_is_never_sent_twice() -> None:
    async with scripted(lambda r: ok()) as server, HttpClient() as client:
        server.answer = drop_second_request_on_a_connection(server)
        await client.post(server.url, b"first", timeout_s=5)
        with pytest.raises(Unavailable, match="the server closed the connection"):
            await client.post(server.url, b"second", timeout_s=5)
    assert [r.body for r in server.requests] == [b"first", b"second"]


async def test_a_refused_connection_is_unavailable() -> None:
    async with scripted(lambda r: ok()) as server:
        url = server.url
    async with HttpClient() as client:
        with pytest.raises(Unavailable, match="cannot connect: ConnectionRefusedError"):
            await client.get(url, timeout_s=5)


# -- limits and timeouts ----------------------------------------------------------------------


async def test_a_silent_server_times_out_as_unavailable() -> None:
    async with scripted(lambda r: Answer(hang=True)) as server, HttpClient() as client:
        with pytest.raises(Unavailable, match=r"timed out after 0\.2 s waiting for the response"):
            await client.get(server.url, timeout_s=0.2)


async def test_the_timeout_covers_the_whole_body() -> None:
    async def trickle(request: Request) -> Answer:
        return Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", hang=False)

    async with scripted(trickle) as server, HttpClient() as client:
        with pytest.raises(Unavailable, match=r"timed out after 0\.2 s reading the response body"):
            await client.get(server.url, timeout_s=0.2)


@pytest.mark.parametrize(("raw", "message"), [
    (b"HTTP/1.1 OK\r\n\r\n", "malformed status line 'HTTP/1.1 OK'"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "malformed status line 'SSH-2.0-OpenSSH_9.2'"),
    (b"HTTP/1.1 200 OK\r\n" + b"x-a: 1\r\n" * 101 + b"\r\n", "more than 100 header fields"),
    (b"HTTP/1.1 200 OK\r\nx-a: " + b"a" * 9000 + b"\r\n\r\n", "header field longer than 8192"),
    (b"HTTP/1.1 200 OK\r\nx-a: " + b"a" * 70_000 + b"\r\n\r\n", "header field longer than 8192"),
    (b"HTTP/1.1 200 OK\r\n" + (b"x-a: " + b"a" * 8000 + b"\r\n") * 9 + b"\r\n",
     "response head larger than 65536 bytes"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", "after 3 of 10 body bytes"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
     "chunk data not followed by a line break"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "bad Content-Length"),
])  # fmt: skip
async def test_malformed_responses_are_unavailable_with_a_clear_message(
    raw: bytes, message: str
) -> None:
    async with scripted(lambda r: Answer(raw, close=True)) as server, HttpClient() as client:
        with pytest.raises(Unavailable, match=message):
            await client.get(server.url, timeout_s=5)


async def test_a_body_over_the_limit_is_refused() -> None:
    async with (
        scripted(lambda r: ok(b"x" * 2000)) as server,
        HttpClient(max_body_bytes=1000) as client,
    ):
        with pytest.raises(Unavailable, match="response body over 1000 bytes"):
            await client.get(server.url, timeout_s=5)


# -- gzip-encoded answers -------------------------------------------------------------------


def gzipped(body: bytes) -> Answer:
    return ok(gzip.compress(body), "content-encoding: gzip")


async def test_requests_ask_for_gzip_and_get_the_body_decoded() -> None:
    document = b'{"generation": 7, "padding": "' + b"a" * 5000 + b'"}'
    async with scripted(lambda r: gzipped(document)) as server, HttpClient() as client:
        response = await client.get(server.url, timeout_s=5)
        assert response.body == document
        assert response.headers["content-encoding"] == "gzip"
        async with client.stream("GET", server.url, timeout_s=5) as streamed:
            raw = b"".join([piece async for piece in streamed.iter_bytes()])
    assert server.requests[0].headers["accept-encoding"] == "gzip"
    assert "accept-encoding" not in server.requests[1].headers  # downloads: bytes as stored
    assert gzip.decompress(raw) == document


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not gzip at all", "corrupt gzip body"),
        (gzip.compress(b"x" * 100, mtime=0)[:-12], "truncated gzip body"),
        (gzip.compress(b"x" * 100, mtime=0) + b"junk", "data after the gzip body"),
        (gzip.compress(b"x" * 5000, mtime=0), "gzip body decodes to over 1000 bytes"),
    ],
    ids=["not-gzip", "truncated", "trailing-junk", "inflating"],
)
async def test_bad_or_inflating_gzip_bodies_are_unavailable(raw: bytes, message: str) -> None:
    answer = ok(raw, "content-encoding: gzip")
    async with (
        scripted(lambda r: answer) as server,
        HttpClient(max_body_bytes=1000) as client,
    ):
        with pytest.raises(Unavailable, match=message):
            await client.get(server.url, timeout_s=5)


# -- HttpTransport downloads ----------------------------------------------------------------


BLOB = bytes(range(256)) * 1000  # 256 kB: several 64 KiB pieces


def ranged(request: Request) -> Answer:
    """Serves BLOB, honouring `range: bytes=N-`."""
    spec = request.headers.get("range")
    if spec is None:
        return ok(BLOB)
    start = int(spec.removeprefix("bytes=").rstrip("-"))
    part = BLOB[start:]
    return ok(part, f"content-range: bytes {start}-{len(BLOB) - 1}/{len(BLOB)}",
              status="206 Partial Content")  # fmt: skip


async def test_a_download_resumes_with_206_and_starts_over_with_200(tmp_path: Path) -> None:
    destination = tmp_path / "blob.part"
    destination.write_bytes(BLOB[:1000])
    async with scripted(ranged) as server:
        transport = HttpTransport(server.url)
        resumed = await transport.download("/b", {"range": "bytes=1000-"}, destination, 5)
        assert resumed.status == 206
        assert destination.read_bytes() == BLOB
        assert resumed.headers["content-range"] == f"bytes 1000-{len(BLOB) - 1}/{len(BLOB)}"

        destination.write_bytes(b"stale bytes that are not a prefix")
        server.answer = lambda r: ok(BLOB)  # a server that ignores Range
        whole = await transport.download("/b", {"range": "bytes=33-"}, destination, 5)
        assert (whole.status, whole.body) == (200, b"")
        assert destination.read_bytes() == BLOB
        await transport.close()


async def test_a_download_error_returns_its_body_and_leaves_the_file(tmp_path: Path) -> None:
    destination = tmp_path / "blob.part"
    destination.write_bytes(b"partial")
    body = b'{"error": {"code": "range_not_satisfiable", "message": "no"}}'
    async with scripted(lambda r: ok(body, status="416 Range Not Satisfiable")) as server:
        transport = HttpTransport(server.url)
        response = await transport.download("/b", {"range": "bytes=7-"}, destination, 5)
        await transport.close()
    assert (response.status, response.body) == (416, body)
    assert destination.read_bytes() == b"partial"


async def test_a_broken_off_download_keeps_what_arrived(tmp_path: Path) -> None:
    destination = tmp_path / "blob.part"
    cut = Answer(f"HTTP/1.1 200 OK\r\ncontent-length: {len(BLOB)}\r\n\r\n".encode()
                 + BLOB[:100_000], close=True)  # fmt: skip
    async with scripted(lambda r: cut) as server:
        transport = HttpTransport(server.url)
        with pytest.raises(Unavailable, match=f"after 100000 of {len(BLOB)} body bytes"):
            await transport.download("/b", {}, destination, 5)
        await transport.close()
    assert destination.read_bytes() == BLOB[:100_000]  # the next attempt resumes from here


# -- TLS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    server: ssl.SSLContext


def make_certificates(directory: Path, names: Sequence[x509.GeneralName]) -> Certificates:
    """A CA of the test's own and a server certificate it signs for `names`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = directory / "server.pem"
    chain.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(chain)
    return Certificates(ca_file, server)


LOOPBACK = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


async def test_https_verifies_the_server_against_the_ca_file(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path, LOOPBACK)
    async with scripted(lambda r: ok(b"secret"), tls=certificates.server) as server:
        transport = HttpTransport(server.url, ca_file=certificates.ca_file)
        for _ in range(2):
            response = await transport.request("GET", "/", b"", {}, 5)
            assert (response.status, response.body) == (200, b"secret")
        await transport.close()
    assert server.connections == 1


async def test_https_refuses_a_certificate_it_cannot_verify(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path, LOOPBACK)
    async with scripted(lambda r: ok(), tls=certificates.server) as server:
        transport = HttpTransport(server.url)  # the system's trust store: not our CA
        with pytest.raises(Unavailable, match=r"cannot connect: .*CERTIFICATE_VERIFY_FAILED"):
            await transport.request("GET", "/", b"", {}, 5)
        await transport.close()
    assert not server.requests


async def test_https_refuses_a_certificate_for_another_name(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path, [x509.DNSName("fleet.example")])
    async with scripted(lambda r: ok(), tls=certificates.server) as server:
        transport = HttpTransport(server.url, ca_file=certificates.ca_file)
        with pytest.raises(Unavailable, match="IP address mismatch"):
            await transport.request("GET", "/", b"", {}, 5)
        await transport.close()
    assert not server.requests
