"""The agent's HTTP/1.1 client: standard library only (asyncio streams, `ssl` for https),
so the long-running agent process does not carry httpx and its dependencies.

    HttpClient ── one pool per origin (scheme, host, port): at most `max_connections` open,
       │          up to `max_idle_connections` kept alive for `keepalive_s`
       ├─ stream(method, url, ...)  an async context: status and headers, then the body in
       │                            pieces; the connection returns to the pool only after
       │                            the body was read to its end
       ├─ request(...)              the same, body read into memory (bounded); asks for
       │                            gzip and decodes it (JSON answers shrink ~5x)
       └─ get(url) / post(url)      the `LocalHttp` port: health probes, checkpoint hooks

One `timeout_s` covers a whole exchange: waiting for a free connection, connecting, the TLS
handshake, sending, and reading the response to its end. Every failure to get a response
— refused or reset connections, TLS errors, malformed or oversized responses, timeouts —
raises `Unavailable` saying what happened and at which step; the connection is then
discarded, never reused. HTTP error statuses are responses like any other.

A request that fails on a *reused* keep-alive connection before any byte of a response came
back (the server closed the idle connection as the request went out) is sent once more on a
fresh connection, when that is safe: the method is idempotent, or nothing was sent. Headers
may be given as a function, called for every attempt: a signed request gets a fresh
signature (and nonce) for the second one, which the server would otherwise refuse as a
replay.

TLS verifies the server's certificate and host name, against `ca_file` when given, else the
system's trust store (OpenSSL's default paths; `SSL_CERT_FILE` and `SSL_CERT_DIR` are
honoured). `ssl` is imported, and the context built, with the first https connection. With
a `client_certificate` whose files exist, https connections present it (mutual TLS); once
it is `renewed`, new connections present the new one and those opened with the old one
close when their exchange ends instead of going back to the pool.

With `proxies` (`http_proxy.ProxySettings`, usually from HTTPS_PROXY / HTTP_PROXY /
NO_PROXY), connections to an origin go through its proxy: https through a CONNECT tunnel
(certificate and host name still verified against the origin), http as absolute-form
requests. A proxy's refusal (407, 403, 502 ...) raises `Unavailable` quoting its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgefleet.errors import Unavailable
from edgefleet.transport.http_connection import Connection, TunnelRefused
from edgefleet.transport.http_proxy import Proxy, ProxySettings
from edgefleet.transport.http_wire import (
    IDEMPOTENT_METHODS,
    Origin,
    ProtocolError,
    ResponseHead,
    decode_gzip,
    encode_request_head,
    merge_headers,
    split_url,
)
from edgefleet.transport.messages import Headers, TransportResponse, resolve_headers

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
# Below the 5 s after which uvicorn (and many servers) close an idle keep-alive connection by
# default, so that a request rarely races the server's close (the agent's connection to the
# control plane, whose server keeps them longer, uses `http.CONTROL_PLANE_KEEPALIVE_S`).
DEFAULT_KEEPALIVE_S = 4.0


class ClientCertificate:
    """The certificate (PEM) and private key files https connections present while it is
    `usable`; `renewed` after the files were replaced, `withdrawn` once the certificate
    expired (a server refuses the handshake of a client presenting an expired one)."""

    def __init__(self, certificate_file: Path, key_file: Path) -> None:
        self.certificate_file = certificate_file
        self.key_file = key_file
        self.generation = 0
        self.usable = True

    def renewed(self) -> None:
        self.usable = True
        self.generation += 1

    def withdrawn(self) -> None:
        if self.usable:
            self.usable = False
            self.generation += 1


class LocalHttp(Protocol):
    """HTTP to services on this device: the supervisor's health probes and the workload
    runner's checkpoint hook. Raises edgefleet.errors.Unavailable when no response comes
    (an error status is a response); the simulator answers with a fake."""

    async def get(self, url: str, *, timeout_s: float) -> TransportResponse: ...

    async def post(self, url: str, body: bytes = b"", *, timeout_s: float) -> TransportResponse: ...

    async def aclose(self) -> None: ...


class HttpResponse:
    """A response whose body has not been read yet (inside `HttpClient.stream`)."""

    def __init__(self, label: str, connection: Connection, head: ResponseHead) -> None:
        self._label = label
        self._connection = connection
        self._head = head
        self.status = head.status
        self.reason = head.reason
        self.headers = head.headers
        self.complete = False  # the body was read to its end
        self._started = False

    async def iter_bytes(self) -> AsyncGenerator[bytes, None]:
        """The body in pieces of at most 64 KiB; Unavailable if it breaks off or is
        malformed. Read once."""
        if self._started:
            raise RuntimeError("the response body was already read")
        self._started = True
        try:
            async with contextlib.aclosing(self._connection.iter_body(self._head)) as pieces:
                async for piece in pieces:
                    yield piece
        except ProtocolError as e:
            raise Unavailable(f"{self._label}: {e}") from e
        except (OSError, EOFError) as e:
            raise Unavailable(f"{self._label}: reading the body: {_describe(e)}") from e
        self.complete = True

    async def read(self, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
        """The whole body, decoded when it came gzip-encoded; Unavailable when it (or what it
        decodes to) is longer than `max_bytes`."""
        if self._head.length is not None and self._head.length > max_bytes:
            raise Unavailable(f"{self._label}: response body over {max_bytes} bytes")
        received, size = [], 0
        async with contextlib.aclosing(self.iter_bytes()) as pieces:
            async for piece in pieces:
                size += len(piece)
                if size > max_bytes:
                    raise Unavailable(f"{self._label}: response body over {max_bytes} bytes")
                received.append(piece)
        body = b"".join(received)
        if self.headers.get("content-encoding", "").strip().lower() == "gzip":
            try:
                return decode_gzip(body, max_bytes)
            except ProtocolError as e:
                raise Unavailable(f"{self._label}: {e}") from e
        return body


class _Pool:
    """The connections to one origin."""

    def __init__(self) -> None:
        self.idle: list[Connection] = []  # most recently used last
        self.open = 0  # idle and in use
        self.waiters: deque[asyncio.Future[None]] = deque()

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class _Progress:
    """Where an exchange is, for the message when it times out."""

    def __init__(self) -> None:
        self.step = "waiting for a free connection"


class HttpClient:
    def __init__(
        self,
        *,
        max_connections: int | None = 4,
        max_idle_connections: int = 2,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        user_agent: str = "edgefleet-agent",
        ca_file: Path | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        proxies: ProxySettings | None = None,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        """Limits are per origin; `max_connections=None` for no limit (the simulator's
        pool, shared by every virtual device of a process). `proxies`: None connects
        directly. `client_certificate`: presented over https once its files exist."""
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1 (or None)")
        self._max_connections = max_connections
        self._max_idle = max_idle_connections
        self._keepalive_s = keepalive_s
        self._user_agent = user_agent
        self._ca_file = ca_file
        self._max_body_bytes = max_body_bytes
        self._proxies = proxies
        self._tls: ssl.SSLContext | None = None
        self._client_certificate = client_certificate
        self._tls_generation = -1  # of the client certificate in `_tls`
        # The client certificate generation each TLS connection was opened with.
        self._opened_with: weakref.WeakKeyDictionary[Connection, int] = weakref.WeakKeyDictionary()
        self._pools: dict[Origin, _Pool] = {}
        self._closed = False

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the LocalHttp port -----------------------------------------------------------------

    async def get(self, url: str, *, timeout_s: float) -> TransportResponse:
        return await self.request("GET", url, timeout_s=timeout_s)

    async def post(self, url: str, body: bytes = b"", *, timeout_s: float) -> TransportResponse:
        return await self.request("POST", url, body=body, timeout_s=timeout_s)

    # -- requests ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Headers | None = None,
        timeout_s: float,
    ) -> TransportResponse:
        """One exchange, the response body read into memory (at most `max_body_bytes`)."""
        async with self.stream(method, url, body=body, headers=headers, timeout_s=timeout_s,
                               accept_gzip=True) as response:  # fmt: skip
            content = await response.read(self._max_body_bytes)
        return TransportResponse(response.status, content, response.headers)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        headers: Headers | None = None,
        timeout_s: float,
        accept_gzip: bool = False,
    ) -> AsyncIterator[HttpResponse]:
        """One exchange: the response with its status and headers, its body still to read.
        The timeout runs until the context is left. With `accept_gzip` the request says
        `Accept-Encoding: gzip` (then read the body with `read`, which decodes it)."""
        if self._closed:
            raise RuntimeError("the HTTP client is closed")
        origin, target = split_url(url)
        label = f"{method} {origin}{target}"
        proxy = self._proxy_for(origin)
        fixed: dict[str, str] = {"user-agent": self._user_agent}
        if accept_gzip:
            fixed["accept-encoding"] = "gzip"
        if proxy is not None and not origin.tls:
            target = f"{origin}{target}"  # absolute form: the proxy forwards it
            fixed.update(proxy.headers())

        def head() -> bytes:
            fields = merge_headers(fixed, {} if headers is None else resolve_headers(headers))
            return encode_request_head(method, target, origin, fields, len(body))

        first = head()  # a request that cannot be written fails here, before any I/O
        progress = _Progress()
        try:
            async with asyncio.timeout(timeout_s):
                connection, response_head = await self._exchange(
                    origin, proxy, method, (first, head), body, label, progress
                )
                response = HttpResponse(label, connection, response_head)
                try:
                    progress.step = "reading the response body"
                    yield response
                finally:
                    self._release(connection, response.complete and response_head.keep_alive)
        except TimeoutError as e:
            raise Unavailable(f"{label}: timed out after {timeout_s:g} s {progress.step}") from e

    def _proxy_for(self, origin: Origin) -> Proxy | None:
        return None if self._proxies is None else self._proxies.for_origin(origin)

    async def _exchange(
        self,
        origin: Origin,
        proxy: Proxy | None,
        method: str,
        heads: tuple[bytes, Callable[[], bytes]],
        body: bytes,
        label: str,
        progress: _Progress,
    ) -> tuple[Connection, ResponseHead]:
        """Send the request and read the response head, on a pooled connection or a new
        one; once more on a fresh connection (its head written anew) when a reused one
        failed safely."""
        fresh = False
        while True:
            progress.step = "waiting for a free connection"
            connection = await self._acquire(origin, proxy, fresh, label, progress)
            try:
                progress.step = "sending the request"
                await connection.send(heads[1]() if fresh else heads[0], body)
                progress.step = "waiting for the response"
                return connection, await connection.read_head(method)
            except ProtocolError as e:
                self._release(connection, reusable=False)
                raise Unavailable(f"{label}: {e}") from e
            except (OSError, EOFError) as e:
                self._release(connection, reusable=False)
                safe = not connection.sent_any or method in IDEMPOTENT_METHODS
                if safe and not fresh and connection.reused and not connection.received_any:
                    log.debug("keep-alive connection failed; retrying on a fresh one",
                              extra={"request": label, "error": _describe(e)})  # fmt: skip
                    fresh = True
                    continue
                raise Unavailable(f"{label}: {progress.step}: {_describe(e)}") from e
            except BaseException:
                self._release(connection, reusable=False)
                raise

    # -- the pool ---------------------------------------------------------------------------

    async def _acquire(
        self, origin: Origin, proxy: Proxy | None, fresh: bool, label: str, progress: _Progress
    ) -> Connection:
        """An idle connection to `origin`, or a new one once there is room for it. `fresh`:
        never an idle one (they are closed: after one failed, the others are suspect)."""
        pool = self._pools.setdefault(origin, _Pool())
        while True:
            while pool.idle:
                connection = pool.idle.pop()
                if (
                    not fresh
                    and connection.idle_usable(self._keepalive_s)
                    and self._current(connection)
                ):
                    return connection
                connection.close()
                pool.open -= 1
            if self._max_connections is None or pool.open < self._max_connections:
                break
            waiter = asyncio.get_running_loop().create_future()
            pool.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    pool.wake_one()  # pass the wake-up on
                raise
        pool.open += 1
        progress.step = f"connecting to {origin.authority}"
        if proxy is not None:
            progress.step += f" through the proxy {proxy.origin.authority}"
        try:
            tls = self._tls_context() if origin.tls else None
            connection = await Connection.open(origin, tls, proxy)
            if tls is not None:
                self._opened_with[connection] = self._tls_generation
            return connection
        except BaseException as e:
            pool.open -= 1
            pool.wake_one()
            if isinstance(e, TunnelRefused):
                raise Unavailable(f"{label}: {e}") from e
            if isinstance(e, ProtocolError):
                raise Unavailable(f"{label}: the proxy's answer: {e}") from e
            if isinstance(e, OSError | EOFError):
                via = "" if proxy is None else f" through the proxy {proxy.origin.authority}"
                raise Unavailable(f"{label}: cannot connect{via}: {_describe(e)}") from e
            raise

    def _release(self, connection: Connection, reusable: bool) -> None:
        """Give the connection back: to the idle list when it can carry another request,
        else closed. Synchronous, so it also runs while a task is being cancelled."""
        pool = self._pools[connection.origin]
        if (reusable and not self._closed and len(pool.idle) < self._max_idle
                and self._current(connection)):  # fmt: skip
            connection.park()
            pool.idle.append(connection)
        else:
            connection.close()
            pool.open -= 1
        pool.wake_one()

    def _current(self, connection: Connection) -> bool:
        """Whether the connection presents the client certificate new ones would."""
        opened_with = self._opened_with.get(connection)
        certificate = self._client_certificate
        return opened_with is None or certificate is None or opened_with == certificate.generation

    def _tls_context(self) -> ssl.SSLContext:
        certificate = self._client_certificate
        generation = certificate.generation if certificate is not None else 0
        if self._tls is None or generation != self._tls_generation:
            import ssl

            cafile = str(self._ca_file) if self._ca_file is not None else None
            context = ssl.create_default_context(cafile=cafile)
            if (certificate is not None and certificate.usable
                    and certificate.certificate_file.exists()):  # fmt: skip
                try:
                    context.load_cert_chain(certificate.certificate_file, certificate.key_file)
                except (OSError, ssl.SSLError) as e:
                    raise Unavailable(f"cannot load the client certificate "
                                      f"{certificate.certificate_file}: {e}") from e  # fmt: skip
            self._tls, self._tls_generation = context, generation
        return self._tls

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their exchange ends."""
        self._closed = True
        idle = [c for pool in self._pools.values() for c in pool.idle]
        for pool in self._pools.values():
            pool.open -= len(pool.idle)
            pool.idle.clear()
        await asyncio.gather(*(c.aclose() for c in idle))


def _describe(error: BaseException) -> str:
    """An exception as a short phrase: its message, or its type when it has none."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
