"""The HTTP/1.1 wire format as the agent's client speaks it: URLs split into an origin and a
request target, request heads written out; status lines, header fields, body framing and
chunk sizes read in. Pure functions, strict, with limits.

    >>> origin, target = split_url("http://127.0.0.1:8000/v1/tuf/1.root.json?x=1")
    >>> origin.authority, target
    ('127.0.0.1:8000', '/v1/tuf/1.root.json?x=1')
    >>> parse_status_line(b"HTTP/1.1 206 Partial Content\\r\\n")
    ('1.1', 206, 'Partial Content')

Malformed input from a server raises `ProtocolError`, naming what was wrong; the client
turns it into `Unavailable` and discards the connection. A request the caller cannot
send (a bad URL, a header with a line break) raises `InvalidInput` before any I/O.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from edgefleet.errors import InvalidInput

MAX_LINE_BYTES = 8 * 1024  # one status line, header field or chunk-size line
MAX_HEAD_BYTES = 64 * 1024  # a response's status line and header fields together
MAX_HEADER_FIELDS = 100
MAX_TRAILER_FIELDS = 20
# Requests a client may repeat when it cannot tell whether the server saw them (RFC 9110 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
# The client frames requests itself; a caller must not set these.
_FRAMING_FIELDS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[\t ]*(?:;.*)?")
_REQUEST_TARGET = re.compile(r"/[!-~]*")  # printable ASCII, no spaces
_TEXT_FIELD = re.compile(r"[\t\x20-\x7e]*")


class ProtocolError(Exception):
    """A response that breaks HTTP/1.1 (or this client's limits)."""


def decode_gzip(data: bytes, max_bytes: int) -> bytes:
    """A gzip-encoded body (`Content-Encoding: gzip`) decoded, refusing more than `max_bytes`
    of output (a small body may inflate enormously), a corrupt or truncated stream, and
    anything after it.

    >>> decode_gzip(bytes.fromhex("1f8b0800000000000203cb48cdc9c9070086a6103605000000"), 64)
    b'hello'
    """
    decoder = zlib.decompressobj(wbits=31)  # 31: expect a gzip header and trailer
    try:
        decoded = decoder.decompress(data, max_bytes + 1)
    except zlib.error as e:
        raise ProtocolError(f"corrupt gzip body: {e}") from e
    if len(decoded) > max_bytes:
        raise ProtocolError(f"gzip body decodes to over {max_bytes} bytes")
    if not decoder.eof:
        raise ProtocolError("truncated gzip body")
    if decoder.unused_data:
        raise ProtocolError("data after the gzip body")
    return decoded


@dataclass(frozen=True)
class Origin:
    """Where a connection goes: one keep-alive pool per origin."""

    scheme: str  # "http" or "https"
    host: str  # a name or an IP address (IPv6 without brackets)
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}"


def split_url(url: str) -> tuple[Origin, str]:
    """The origin of an absolute http(s) URL and its request target (path and query)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidInput(f"bad URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidInput(f"bad URL {url!r}: only http and https are supported")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise InvalidInput(f"bad URL {url!r}: it needs a host and no user information")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not _REQUEST_TARGET.fullmatch(target):
        raise InvalidInput(f"bad URL {url!r}: the path must be printable ASCII without spaces")
    return Origin(scheme, parts.hostname, port or _DEFAULT_PORTS[scheme]), target


def encode_request_head(
    method: str, target: str, origin: Origin, headers: Iterable[tuple[str, str]], body_bytes: int
) -> bytes:
    """The request line and header fields, with Host and Content-Length added.

    Content-Length is sent with every body, and as 0 for an empty POST, PUT or PATCH (a
    server may otherwise wait for a body or refuse the request with 411)."""
    if not _TOKEN.fullmatch(method.encode()):
        raise InvalidInput(f"bad HTTP method {method!r}")
    lines = [f"{method} {target} HTTP/1.1", f"host: {origin.authority}"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name.encode()) or not _TEXT_FIELD.fullmatch(value):
            raise InvalidInput(f"bad request header {name!r}: a token name and printable ASCII")
        if name.lower() in _FRAMING_FIELDS:
            raise InvalidInput(f"request header {name!r} is set by the HTTP client")
        lines.append(f"{name}: {value}")
    if body_bytes or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {body_bytes}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def merge_headers(*layers: Mapping[str, str]) -> list[tuple[str, str]]:
    """Header fields from several mappings, later ones replacing earlier ones of the same
    name whatever their case."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return list(merged.values())


def strip_line_end(line: bytes, what: str) -> bytes:
    """A line without its CRLF (a bare LF is accepted, RFC 9112 2.2)."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"{what} longer than {MAX_LINE_BYTES} bytes")
    if not line.endswith(b"\n"):
        raise ProtocolError(f"{what} not terminated by a line break")
    line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    if b"\r" in line or b"\0" in line:
        raise ProtocolError(f"{what} contains a stray CR or NUL byte")
    return line


def parse_status_line(line: bytes) -> tuple[str, int, str]:
    """(HTTP version, status, reason phrase) of a status line."""
    match = _STATUS_LINE.fullmatch(strip_line_end(line, "status line"))
    if match is None:
        shown = line[:60].decode("latin-1").strip()
        raise ProtocolError(f"malformed status line {shown!r}")
    return f"1.{match[1].decode()}", int(match[2]), (match[3] or b"").decode("latin-1")


def parse_header_field(line: bytes) -> tuple[str, str]:
    """(lower-case name, value) of one header field line."""
    line = strip_line_end(line, "header field")
    if line[:1] in (b" ", b"\t"):
        raise ProtocolError("obsolete line folding in a header field")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        shown = line[:60].decode("latin-1")
        raise ProtocolError(f"malformed header field {shown!r}")
    value = value.strip(b" \t")
    if not _FIELD_VALUE.fullmatch(value):
        raise ProtocolError(f"header field {name.decode()!r} has control characters")
    return name.decode("ascii").lower(), value.decode("latin-1")


class Framing(StrEnum):
    """How a response's body is delimited (RFC 9112 6.3)."""

    NONE = "none"  # HEAD, 1xx, 204, 304
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"  # Transfer-Encoding: chunked
    CLOSE = "close"  # until the server closes the connection


@dataclass(frozen=True)
class ResponseHead:
    version: str
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    framing: Framing
    length: int | None  # with Framing.LENGTH
    keep_alive: bool  # the connection may carry another request after this body

    @property
    def informational(self) -> bool:
        return 100 <= self.status < 200


def build_response_head(
    status_line: tuple[str, int, str], fields: Iterable[tuple[str, str]], method: str
) -> ResponseHead:
    """A response head from its parsed lines and the request's method: body framing and
    whether the connection can be reused."""
    version, status, reason = status_line
    headers: dict[str, str] = {}
    lengths: set[str] = set()
    for name, value in fields:
        if name == "content-length":
            lengths.update(v.strip() for v in value.split(","))
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = version == "1.1" and "close" not in connection
    encoding = headers.get("transfer-encoding")
    length: int | None = None
    if status == 101:
        raise ProtocolError("unexpected 101 Switching Protocols")
    tunnel = method == "CONNECT" and 200 <= status < 300  # the tunnel starts right after
    if method == "HEAD" or tunnel or 100 <= status < 200 or status in (204, 304):
        framing = Framing.NONE
    elif encoding is not None:
        if lengths:
            raise ProtocolError("both Transfer-Encoding and Content-Length")
        if encoding.strip().lower() != "chunked":
            raise ProtocolError(f"unsupported Transfer-Encoding {encoding!r}")
        framing = Framing.CHUNKED
    elif lengths:
        if len(lengths) > 1 or not all(v.isdigit() and v.isascii() for v in lengths):
            raise ProtocolError(f"bad Content-Length {headers['content-length']!r}")
        framing, length = Framing.LENGTH, int(lengths.pop())
    else:
        framing, keep_alive = Framing.CLOSE, False
    return ResponseHead(version, status, reason, headers, framing, length, keep_alive)


def parse_chunk_size(line: bytes) -> int:
    """The size of the next chunk of a chunked body; chunk extensions are ignored."""
    match = _CHUNK_SIZE.fullmatch(strip_line_end(line, "chunk-size line"))
    if match is None:
        shown = line[:40].decode("latin-1").strip()
        raise ProtocolError(f"malformed chunk-size line {shown!r}")
    return int(match[1], 16)
