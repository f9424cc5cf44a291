"""Which Accept-Encoding values allow a gzip answer."""

from __future__ import annotations

import gzip

import pytest

from edgefleet.server.compression import accepts_gzip, gzip_bytes


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("gzip, deflate, br, zstd", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*;q=0", False),
        ("identity", False),
        ("x-gzip", False),
        ("gzipped", False),
        ("", False),
        ("gzip;q=oops", False),
        ("gzip;q=0, *", False),
        ("br, *;q=0.5", True),
    ],
)
def test_accepts_gzip(value: str, allowed: bool) -> None:
    assert accepts_gzip(value) is allowed


def test_gzip_bytes_is_standard_gzip() -> None:
    data = b'{"devices": []}' * 100
    assert gzip.decompress(gzip_bytes(data)) == data
