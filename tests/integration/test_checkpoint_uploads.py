"""State archive uploads (`PUT /v1/checkpoints/...`) against a real server: a body is read
only after the device's signed headers passed, and then to disk, never into memory; a bad
signature leaves nothing behind; each device has a quota of archives stored."""

from __future__ import annotations

import hashlib
import os
import select
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from edgefleet.localfleet import ServerProcess
from edgefleet.security.request_signing import sign_request
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice

MIB = 1024 * 1024
QUOTA_BYTES = 5 * MIB // 2
BIG_BYTES = 200 * MIB  # under the 256 MiB limit of one archive
RSS_SLACK_BYTES = 48 * MIB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"EDGEFLEET_CHECKPOINT_QUOTA_BYTES": str(QUOTA_BYTES)}
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", ADMIN_TOKEN, env)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def enroll_token(server: ServerProcess) -> str:
    with server.client() as admin:
        token: str = admin.create_enrollment_token(auto_approve=True)["token"]
    return token


def approved_device(server: ServerProcess, token: str) -> RawDevice:
    device = RawDevice(server.url)
    assert device.enroll(token, name=f"cp-{device.id}").status_code == 200
    return device


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def server_pid(server: ServerProcess) -> int:
    assert server.proc is not None
    return server.proc.pid


def send_chunked(url: str, target: str, headers: dict[str, str], total: int) -> tuple[int, bytes]:
    """PUT `total` bytes as a chunked body, a MiB per chunk, until the server answers (or
    closes); returns how many body bytes were sent and the answer."""
    parts = urlsplit(url)
    head = [f"PUT {target} HTTP/1.1", f"host: {parts.netloc}", "transfer-encoding: chunked",
            "content-type: application/octet-stream"]  # fmt: skip
    head += [f"{name}: {value}" for name, value in headers.items()]
    chunk = f"{MIB:x}\r\n".encode() + b"\0" * MIB + b"\r\n"
    sent = 0
    answer = b""
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        pending = memoryview(chunk)
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], 60)
            if readable:
                break
            assert writable, "the server neither reads nor answers"
            try:
                pending = pending[sock.send(pending) :]
            except (BrokenPipeError, ConnectionResetError):
                break
            if not pending:
                sent += MIB
                pending = memoryview(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")
        sock.settimeout(60)
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
    return sent, answer


def status_and_code(answer: bytes) -> tuple[int, str]:
    status = int(answer.split(b" ", 2)[1])
    body = answer.split(b"\r\n\r\n", 1)[1]
    return status, httpx.Response(status, content=body).json()["error"]["code"]


def test_an_unsigned_upload_is_refused_before_its_body_is_read(
    server: ServerProcess, enroll_token: str
) -> None:
    device = approved_device(server, enroll_token)
    target = f"/v1/checkpoints/{device.id}/{'ab' * 32}"
    before = rss_bytes(server_pid(server))
    sent, answer = send_chunked(server.url, target, {}, BIG_BYTES)
    assert status_and_code(answer) == (401, "unsigned_request")
    assert sent < BIG_BYTES // 2  # answered long before the client was done
    assert rss_bytes(server_pid(server)) - before < RSS_SLACK_BYTES


def test_an_upload_of_an_unknown_device_is_refused_before_its_body_is_read(
    server: ServerProcess,
) -> None:
    stranger = RawDevice(server.url)  # a key that never enrolled
    target = f"/v1/checkpoints/{stranger.id}/{'cd' * 32}"
    headers = sign_request(stranger.key, "PUT", target, b"", stranger.id, datetime.now(UTC))
    before = rss_bytes(server_pid(server))
    sent, answer = send_chunked(server.url, target, headers, BIG_BYTES)
    assert status_and_code(answer) == (401, "unknown_device")
    assert sent < BIG_BYTES // 2
    assert rss_bytes(server_pid(server)) - before < RSS_SLACK_BYTES


def test_a_wrongly_signed_upload_is_read_to_disk_then_refused_leaving_nothing(
    server: ServerProcess, enroll_token: str
) -> None:
    """Headers of an approved device pass, so the body is read, to a temporary file, while
    hashed; the signature over it fails and the file is deleted."""
    device = approved_device(server, enroll_token)
    archive = os.urandom(MIB)
    sha256 = hashlib.sha256(archive).hexdigest()
    target = f"/v1/checkpoints/{device.id}/{sha256}"
    # Signed over another body: what an attacker who cannot sign this one would send.
    headers = sign_request(device.key, "PUT", target, b"other", device.id, datetime.now(UTC))
    refused = device.send("PUT", target, archive, headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "bad_signature"
    assert not list((server.data_dir / "blobs" / "tmp").iterdir())
    answer = httpx.head(f"{server.url}/v1/blobs/{sha256}",
                        headers={"authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert answer.status_code == 404
    assert upload(device, archive).status_code == 201  # nor did it take the device's quota


def test_a_wrongly_signed_large_upload_is_cut_off_at_the_quota(
    server: ServerProcess, enroll_token: str
) -> None:
    """What an approved device's headers let through is bounded by its quota, on disk."""
    device = approved_device(server, enroll_token)
    target = f"/v1/checkpoints/{device.id}/{'ef' * 32}"
    headers = sign_request(device.key, "PUT", target, b"other", device.id, datetime.now(UTC))
    before = rss_bytes(server_pid(server))
    sent, answer = send_chunked(server.url, target, headers, BIG_BYTES)
    assert status_and_code(answer) == (413, "checkpoint_quota_exceeded")
    assert sent < BIG_BYTES // 2
    assert rss_bytes(server_pid(server)) - before < RSS_SLACK_BYTES
    assert not list((server.data_dir / "blobs" / "tmp").iterdir())


def upload(device: RawDevice, archive: bytes) -> httpx.Response:
    target = f"/v1/checkpoints/{device.id}/{hashlib.sha256(archive).hexdigest()}"
    headers = sign_request(device.key, "PUT", target, archive, device.id, datetime.now(UTC))
    return device.send("PUT", target, archive, headers)


def test_each_device_may_store_archives_up_to_its_quota(
    server: ServerProcess, enroll_token: str
) -> None:
    device = approved_device(server, enroll_token)
    first, second, third = (os.urandom(MIB) for _ in range(3))
    assert upload(device, first).status_code == 201
    assert upload(device, second).status_code == 201
    assert upload(device, first).status_code == 201  # a retried upload: no more room taken
    refused = upload(device, third)
    assert refused.status_code == 413
    error = refused.json()["error"]
    assert error["code"] == "checkpoint_quota_exceeded"
    assert f"quota of {QUOTA_BYTES} bytes" in error["message"]
    # The quota is per device.
    other = approved_device(server, enroll_token)
    assert upload(other, third).status_code == 201
