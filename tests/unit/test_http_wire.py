"""The HTTP/1.1 wire format of the agent's client: what it writes, and what it refuses to
read."""

from __future__ import annotations

import pytest

from edgefleet.errors import InvalidInput
from edgefleet.transport.http_wire import (
    Framing,
    Origin,
    ProtocolError,
    build_response_head,
    encode_request_head,
    merge_headers,
    parse_chunk_size,
    parse_header_field,
    parse_status_line,
    split_url,
)


def test_a_url_splits_into_origin_and_target() -> None:
    assert split_url("https://Fleet.Example/v1/x?wait=30") == (
        Origin("https", "fleet.example", 443), "/v1/x?wait=30")  # fmt: skip
    assert split_url("http://[::1]:8080") == (Origin("http", "::1", 8080), "/")
    assert Origin("http", "::1", 8080).authority == "[::1]:8080"
    assert Origin("https", "fleet.example", 443).authority == "fleet.example"


@pytest.mark.parametrize("url", ["ftp://host/x", "http:///x", "http://u:p@host/x",
                                 "http://host:99999/", "http://host/a b", "/v1/x"])  # fmt: skip
def test_urls_the_client_cannot_send_are_refused_before_any_io(url: str) -> None:
    with pytest.raises(InvalidInput, match="bad URL"):
        split_url(url)


def test_the_request_head_carries_host_and_content_length() -> None:
    origin = Origin("http", "127.0.0.1", 8000)
    head = encode_request_head("POST", "/v1/r", origin, [("x-a", "1")], 5)
    assert head == (b"POST /v1/r HTTP/1.1\r\nhost: 127.0.0.1:8000\r\nx-a: 1\r\n"
                    b"content-length: 5\r\n\r\n")  # fmt: skip
    # An empty POST says so; an empty GET has no framing at all.
    assert b"content-length: 0" in encode_request_head("POST", "/", origin, [], 0)
    assert b"content-length" not in encode_request_head("GET", "/", origin, [], 0)


@pytest.mark.parametrize("headers", [[("x-a", "1\r\nx-b: 2")], [("bad name", "1")],
                                     [("Content-Length", "3")], [("host", "evil")]])  # fmt: skip
def test_header_injection_and_framing_headers_are_refused(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidInput):
        encode_request_head("GET", "/", Origin("http", "h", 80), headers, 0)


def test_later_headers_replace_earlier_ones_whatever_their_case() -> None:
    merged = merge_headers({"content-type": "application/json", "x": "1"},
                           {"Content-Type": "application/octet-stream"})  # fmt: skip
    assert merged == [("Content-Type", "application/octet-stream"), ("x", "1")]


def test_status_lines() -> None:
    assert parse_status_line(b"HTTP/1.1 200 OK\r\n") == ("1.1", 200, "OK")
    assert parse_status_line(b"HTTP/1.0 404\n") == ("1.0", 404, "")
    for bad in (b"HTTP/2 200 OK\r\n", b"HTTP/1.1 20 OK\r\n", b"ICY 200 OK\r\n",
                b"HTTP/1.1 200 OK", b"HTTP/1.1 200 O\rK\r\n"):  # fmt: skip
        with pytest.raises(ProtocolError):
            parse_status_line(bad)


def test_header_fields() -> None:
    assert parse_header_field(b"Content-Type:  text/plain \r\n") == ("content-type", "text/plain")
    with pytest.raises(ProtocolError, match="line folding"):
        parse_header_field(b" continued\r\n")
    with pytest.raises(ProtocolError, match="malformed header field"):
        parse_header_field(b"Content-Type : text/plain\r\n")
    with pytest.raises(ProtocolError, match="longer than 8192 bytes"):
        parse_header_field(b"x: " + b"a" * 9000 + b"\r\n")


def test_body_framing_follows_rfc_9112() -> None:
    ok = ("1.1", 200, "OK")
    chunked = build_response_head(ok, [("transfer-encoding", "chunked")], "GET")
    assert (chunked.framing, chunked.keep_alive) == (Framing.CHUNKED, True)
    sized = build_response_head(ok, [("content-length", "12")], "GET")
    assert (sized.framing, sized.length) == (Framing.LENGTH, 12)
    assert build_response_head(ok, [("content-length", "12")], "HEAD").framing is Framing.NONE
    assert build_response_head(("1.1", 304, ""), [], "GET").framing is Framing.NONE
    unframed = build_response_head(ok, [], "GET")
    assert (unframed.framing, unframed.keep_alive) == (Framing.CLOSE, False)
    assert not build_response_head(ok, [("connection", "Close"), ("content-length", "0")],
                                   "GET").keep_alive  # fmt: skip
    assert not build_response_head(("1.0", 200, ""), [("content-length", "0")], "GET").keep_alive


@pytest.mark.parametrize(("fields", "message"), [
    ([("content-length", "1"), ("content-length", "2")], "bad Content-Length"),
    ([("content-length", "-1")], "bad Content-Length"),
    ([("content-length", "3"), ("transfer-encoding", "chunked")], "both"),
    ([("transfer-encoding", "gzip, chunked")], "unsupported Transfer-Encoding"),
])  # fmt: skip
def test_ambiguous_framing_is_refused(fields: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        build_response_head(("1.1", 200, "OK"), fields, "GET")


def test_chunk_sizes() -> None:
    assert parse_chunk_size(b"1a\r\n") == 26
    assert parse_chunk_size(b"0;name=value\r\n") == 0
    for bad in (b"\r\n", b"-1\r\n", b"zz\r\n", b"1" * 16 + b"\r\n"):
        with pytest.raises(ProtocolError, match="chunk-size"):
            parse_chunk_size(bad)
