"""Every operation of the HTTP API, fed bad input: the answer is a 4xx with a message.

The operations come from the server's own OpenAPI document, so a route added later is
covered without touching this file. For each one: no credentials; garbage path parameters;
every query parameter set to each of a list of hostile values; bodies that are not JSON, not
an object, or a schema-shaped example with one field at a time replaced by a hostile value
(wrong type, huge or negative numbers, overlong and control-character strings). Device
routes get requests signed by a real enrolled device key. Nothing may answer 5xx, every 4xx
must carry `{"error": {"code", "message"}}`, and the server must log no traceback.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from edgefleet.localfleet import ServerProcess
from edgefleet.security.request_signing import sign_request
from tests.device_requests import RawDevice

HOSTILE: list[Any] = [
    None, 0, -1, 1.5, 2**63, -(2**63) - 1, 2**70, 1e308, -1e308, "", "x" * 70_000, "\u0000",
    "\ud800", "../../etc/passwd", [], {}, True, [1, "a", None], {"a": {"b": []}}, "1h",
    "-5m", "2026-13-45",
]  # fmt: skip
HOSTILE_QUERY = [
    *(str(v)[:3000] for v in HOSTILE if v != "\ud800"),  # httpx refuses longer URLs
    "nan", "inf", "-inf", "1e999", "99999999999999999999d", "36501d",
]  # fmt: skip
HOSTILE_PATH = ["nope", "..%2F..%2Fetc", "x" * 3000, "%00", "%F0%9F%92%A9", "-1", "a" * 64]
BROKEN_BODIES = [b"", b"{", b"\xff\xfe", b"[]", b'"s"', b"{}", b"null", b'{"a": 1}']


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[tuple[dict[str, Any], RawDevice]]:
    with server.client() as admin:
        token = admin.create_enrollment_token(auto_approve=True)["token"]
    device = RawDevice(server.url)
    assert device.enroll(token).status_code == 200
    spec = httpx.get(f"{server.url}/openapi.json").json()
    yield spec, device


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def example(spec: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A value shaped like the schema (not necessarily valid: just deep enough to pass the
    outer checks, so that one bad field reaches the code behind them)."""
    schema = _resolve(spec, schema)
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if _resolve(spec, o).get("type") != "null"]
            return example(spec, (options or schema[key])[0], depth)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {}) if depth < 5 else {}
        return {name: example(spec, sub, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [example(spec, schema["items"], depth + 1)] if "items" in schema else []
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return max(1.0, schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    return "a" * max(1, schema.get("minLength", 1))


def field_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*prefix, key)
            yield from field_paths(value, (*prefix, key))
    elif isinstance(doc, list) and doc:
        yield (*prefix, 0)
        yield from field_paths(doc[0], (*prefix, 0))


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return out


class Prober:
    def __init__(self, server: ServerProcess, device: RawDevice, http: httpx.Client):
        self.server = server
        self.device = device
        self.http = http
        self.failures: list[str] = []
        self.sent = 0

    def send(self, method: str, path: str, target: str, body: bytes, auth: bool, what: str) -> None:
        headers = {"content-type": "application/json"}
        if auth and ("{device_id}" in path or path == "/v1/enroll"):  # device routes
            key, device_id = self.device.key, self.device.id
            headers |= sign_request(key, method, target, body, device_id, datetime.now(UTC))
        elif auth:
            headers["authorization"] = f"Bearer {self.server.admin_token}"
        try:
            answer = self.http.request(method, target, content=body, headers=headers)
        except httpx.TransportError as e:  # e.g. the connection a 500 left behind
            self.failures.append(f"{method} {target[:100]} ({what[:80]}): {e!r}")
            return
        self.sent += 1
        self.judge(method, target, what, answer)

    def judge(self, method: str, target: str, what: str, answer: httpx.Response) -> None:
        where = f"{method} {target[:100]} ({what[:80]}): {answer.status_code}"
        if answer.status_code >= 500:
            self.failures.append(f"{where} {answer.text[:200]}")
        elif answer.status_code >= 400 and method != "HEAD":
            try:
                error = answer.json()["error"]
                assert error["code"] and error["message"]
            except (ValueError, KeyError, TypeError, AssertionError):
                self.failures.append(f"{where} without an error document: {answer.text[:200]}")


def concrete(path: str, op: dict[str, Any], value: str, device: RawDevice) -> str:
    for param in op.get("parameters", []):
        if param["in"] == "path":
            name = param["name"]
            fill = device.id if name == "device_id" and value == "" else value or "nope"
            path = path.replace("{" + name + "}", fill)
    return path


def test_no_operation_answers_bad_input_with_a_server_error(
    server: ServerProcess, api: tuple[dict[str, Any], RawDevice]
) -> None:
    spec, device = api
    with httpx.Client(base_url=server.url, timeout=30) as http:
        probe = Prober(server, device, http)
        probe_every_operation(spec, device, probe)
    assert probe.sent > 3000
    assert not probe.failures, "\n".join(probe.failures[:40])
    assert "Traceback" not in server.log()


def probe_every_operation(spec: dict[str, Any], device: RawDevice, probe: Prober) -> None:
    ops = list(operations(spec))
    assert len(ops) > 50, "the OpenAPI document lists the operations"
    for method, path, op in ops:
        target = concrete(path, op, "", device)
        probe.send(method, path, target, b"{", auth=False, what="no credentials")
        if "{" in path:
            for value in HOSTILE_PATH:
                garbage = concrete(path, op, value, device)
                probe.send(method, path, garbage, b"{}", auth=True, what=f"path {value[:20]}")
        for param in op.get("parameters", []):
            if param["in"] == "query":
                for value in HOSTILE_QUERY:
                    query = str(httpx.QueryParams({param["name"]: value}))
                    probe.send(method, path, f"{target}?{query}", b"", auth=True,
                               what=f"{param['name']}={value[:20]}")  # fmt: skip
        content = op.get("requestBody", {}).get("content", {})
        if method in ("POST", "PUT", "PATCH"):
            for body in BROKEN_BODIES:
                probe.send(method, path, target, body, auth=True, what=f"body {body[:10]!r}")
        if "application/json" in content:
            shape = example(spec, content["application/json"]["schema"])
            for field in field_paths(shape):
                for value in HOSTILE:
                    body = json.dumps(replaced(shape, field, value)).encode()
                    probe.send(method, path, target, body, auth=True, what=f"{field}={value!r}")
