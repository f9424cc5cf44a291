"""Operator API: roles, authentication, and bad input refused with a precise 4xx that
writes nothing."""

from __future__ import annotations

import httpx
import pytest

from edgefleet.client import FleetClient
from edgefleet.errors import ApiError
from edgefleet.localfleet import ServerProcess
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice


@pytest.fixture(scope="module")
def tokens(server: ServerProcess) -> dict[str, str]:
    with server.client() as admin:
        return {
            role: admin.create_api_token(f"{role}-user", role)["token"]
            for role in ("viewer", "operator")
        }


@pytest.fixture
def pending_device(server: ServerProcess, admin: FleetClient) -> str:
    raw = RawDevice(server.url)
    enrolled = raw.enroll(admin.create_enrollment_token()["token"])  # a name of its own
    assert enrolled.status_code == 200, enrolled.text
    return raw.id


def audit_head(admin: FleetClient) -> int:
    tail = admin.audit_tail(1)
    return tail[-1]["seq"] if tail else 0


def test_viewer_reads_but_cannot_change(
    server: ServerProcess, tokens: dict[str, str], pending_device: str, admin: FleetClient
) -> None:
    with FleetClient(server.url, tokens["viewer"]) as viewer:
        assert any(d["id"] == pending_device for d in viewer.list_devices())
        before = audit_head(admin)
        for attempt in (
            lambda: viewer.change_enrollment(pending_device, "approve"),
            lambda: viewer.label_device(pending_device, {"x": "y"}, []),
            lambda: viewer.create_enrollment_token(),
            lambda: viewer.create_api_token("sneaky", "admin"),
            lambda: viewer.create_group("g", "a=b"),
        ):
            with pytest.raises(ApiError) as refused:
                attempt()
            assert refused.value.status == 403
            assert refused.value.code == "insufficient_role"
        assert audit_head(admin) == before
    assert admin.get_device(pending_device)["enrollment"] == "pending"


def test_operator_approves_but_cannot_mint_api_tokens(
    server: ServerProcess, tokens: dict[str, str], pending_device: str
) -> None:
    with FleetClient(server.url, tokens["operator"]) as op:
        assert op.change_enrollment(pending_device, "approve")["enrollment"] == "approved"
        with pytest.raises(ApiError) as refused:
            op.create_api_token("escalate", "admin")
        assert refused.value.status == 403
        with pytest.raises(ApiError):
            op.list_api_tokens()


def test_missing_bad_and_revoked_tokens(server: ServerProcess, admin: FleetClient) -> None:
    no_auth = httpx.get(f"{server.url}/v1/devices")
    assert no_auth.status_code == 401
    assert no_auth.json()["error"]["code"] == "missing_token"
    wrong = httpx.get(f"{server.url}/v1/devices", headers={"authorization": "Bearer nope"})
    assert wrong.json()["error"]["code"] == "invalid_token"
    basic = httpx.get(f"{server.url}/v1/devices", headers={"authorization": "Basic abc"})
    assert basic.json()["error"]["code"] == "bad_auth_scheme"

    created = admin.create_api_token("short-lived", "viewer")
    admin.revoke_api_token(created["id"])
    with FleetClient(server.url, created["token"]) as revoked, pytest.raises(ApiError) as e:
        revoked.list_devices()
    assert (e.value.status, e.value.code) == (401, "token_revoked")


def test_tokens_are_stored_hashed(server: ServerProcess, admin: FleetClient) -> None:
    secret = admin.create_api_token("hash-check", "viewer")["token"]
    assert secret.encode() not in server.db_path.read_bytes()
    assert ADMIN_TOKEN.encode() not in server.db_path.read_bytes()
    assert all(t.get("token") is None for t in admin.list_api_tokens())


def raw_post(server: ServerProcess, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        server.url + path,
        content=content,
        headers={
            "authorization": f"Bearer {ADMIN_TOKEN}",
            "content-type": "application/json",
            **headers,
        },
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "mentions"),
    [
        ("/v1/enrollment-tokens", b"{not json", 400, "malformed_json", "not valid JSON"),
        (
            "/v1/enrollment-tokens",
            b'{"auto_approve": true, "colour": 1}',
            422,
            "invalid_request",
            "colour: unknown field",
        ),
        ("/v1/enrollment-tokens", b'{"max_uses": 0}', 422, "invalid_request", "max_uses"),
        ("/v1/tokens", b'{"name": "x"}', 422, "invalid_request", "role: field required"),
        ("/v1/tokens", b'{"name": "x", "role": "root"}', 400, "unknown_role", "root"),
        (
            "/v1/groups",
            b'{"name": "g1", "selector": "tier in (a"}',
            400,
            "invalid_selector",
            "expected",
        ),
        (
            "/v1/groups",
            b'{"name": "Bad Name", "selector": "a=b"}',
            400,
            "invalid_input",
            "group name",
        ),
        ("/v1/devices/d-nope/approve", b"", 404, "device_not_found", "d-nope"),
        ("/v1/devices/d-nope/labels", b'{"set": {"a": "b"}}', 404, "device_not_found", "d-nope"),
        ("/v1/nowhere", b"{}", 404, "not_found", "/v1/nowhere"),
    ],
)
def test_bad_input_gets_precise_4xx_and_writes_nothing(
    server: ServerProcess,
    admin: FleetClient,
    path: str,
    body: bytes,
    status: int,
    code: str,
    mentions: str,
) -> None:
    before = audit_head(admin)
    response = raw_post(server, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert mentions in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert audit_head(admin) == before


def test_oversized_body_is_refused_with_413(server: ServerProcess, admin: FleetClient) -> None:
    before = audit_head(admin)
    huge = b'{"description": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = raw_post(server, "/v1/enrollment-tokens", huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert audit_head(admin) == before


def test_bad_labels_and_selectors(server: ServerProcess, admin: FleetClient) -> None:
    raw = RawDevice(server.url)
    raw.enroll(admin.create_enrollment_token(auto_approve=True)["token"], name="lbl")
    with pytest.raises(ApiError) as bad_key:
        admin.label_device(raw.id, {"bad key": "v"}, [])
    assert bad_key.value.status == 400 and "bad key" in bad_key.value.message
    with pytest.raises(ApiError) as both:
        admin.label_device(raw.id, {"a": "1"}, ["a"])
    assert "both set and removed" in both.value.message
    with pytest.raises(ApiError) as selector:
        admin.list_devices(selector="a=b,,c")
    assert selector.value.code == "invalid_selector"


def test_selectors_and_groups_filter_devices(server: ServerProcess, admin: FleetClient) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    ids = {}
    for name, labels in {
        "sel-eu-a": {"region": "eu", "tier": "a", "fleet": "sel"},
        "sel-eu-canary": {"region": "eu", "tier": "b", "canary": "yes", "fleet": "sel"},
        "sel-us-a": {"region": "us", "tier": "a", "fleet": "sel"},
    }.items():
        raw = RawDevice(server.url)
        raw.enroll(token, name=name, labels=labels)
        ids[name] = raw.id
    picked = admin.list_devices(selector="fleet=sel,region=eu,tier in (a,b),!canary")
    assert [d["name"] for d in picked] == ["sel-eu-a"]
    admin.create_group("sel-tier-a", "fleet=sel,tier=a", "tier a devices")
    group = admin.get_group("sel-tier-a")
    assert sorted(group["devices"]) == sorted([ids["sel-eu-a"], ids["sel-us-a"]])
    assert {d["name"] for d in admin.list_devices(group="sel-tier-a")} == {"sel-eu-a", "sel-us-a"}
    with pytest.raises(ApiError) as exists:
        admin.create_group("sel-tier-a", "a=b")
    assert exists.value.status == 409


def test_openapi_documents_the_api(server: ServerProcess) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/v1/devices", "/v1/enroll", "/v1/devices/{device_id}/desired", "/v1/audit"):
        assert path in spec["paths"]
