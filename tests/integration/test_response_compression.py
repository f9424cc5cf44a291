"""The control plane gzips JSON and text answers for clients that ask, and nothing else."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess
from edgefleet.server.compression import MIN_BYTES


@dataclass(frozen=True)
class Wire:
    headers: httpx.Headers
    body: bytes  # as it came over the wire: httpx would decode gzip, iter_raw does not


def raw_get(server: ServerProcess, path: str, accept_encoding: str) -> Wire:
    headers = {"authorization": f"Bearer {server.admin_token}", "accept-encoding": accept_encoding}
    with httpx.stream("GET", server.url + path, headers=headers, timeout=30) as response:
        return Wire(response.headers, b"".join(response.iter_raw()))


def test_json_answers_are_gzipped_for_clients_that_accept_it(server: ServerProcess) -> None:
    plain = raw_get(server, "/openapi.json", "identity")
    zipped = raw_get(server, "/openapi.json", "deflate, gzip;q=0.8, br")
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in zipped.headers["vary"].lower()
    body = gzip.decompress(zipped.body)
    assert json.loads(body) == json.loads(plain.body)
    assert int(zipped.headers["content-length"]) == len(zipped.body)
    assert len(zipped.body) * 4 < len(plain.body)


@pytest.mark.parametrize("accept", ["gzip;q=0", "identity", "br", "x-gzip-ish"])
def test_no_gzip_unless_accepted(server: ServerProcess, accept: str) -> None:
    assert "content-encoding" not in raw_get(server, "/openapi.json", accept).headers


def test_small_and_binary_answers_are_sent_as_they_are(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    assert "content-encoding" not in raw_get(server, "/healthz", "gzip").headers
    blob = tmp_path / "blob"
    blob.write_bytes(b'{"looks": "like json"}' * 1000)  # compressible, but a blob
    sha256 = hashlib.sha256(blob.read_bytes()).hexdigest()
    admin.put_blob(blob, sha256)
    answer = raw_get(server, f"/v1/blobs/{sha256}", "gzip")
    assert "content-encoding" not in answer.headers
    assert answer.body == blob.read_bytes()


def test_a_new_secret_is_never_compressed_nor_cached(server: ServerProcess) -> None:
    headers = {"authorization": f"Bearer {server.admin_token}", "accept-encoding": "gzip"}
    chosen = {"description": "token=efe_" + "a" * 240}  # text a requester picked, beside the secret
    with httpx.stream("POST", f"{server.url}/v1/enrollment-tokens", json=chosen,
                      headers=headers, timeout=30) as answer:  # fmt: skip
        body = b"".join(answer.iter_raw())
    assert answer.status_code == 201
    assert len(body) >= MIN_BYTES  # would be compressed but for the secret
    assert "content-encoding" not in answer.headers
    assert answer.headers["cache-control"] == "no-store"
    assert json.loads(body)["token"]
    api = httpx.post(f"{server.url}/v1/tokens", json={"name": "ci", "role": "viewer"},
                     headers=headers, timeout=30)  # fmt: skip
    assert api.headers["cache-control"] == "no-store"
