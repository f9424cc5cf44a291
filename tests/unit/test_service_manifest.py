"""Service manifests: validation naming the field, and placeholder expansion."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.core.service_manifest import expand_placeholders, parse_service_manifest
from edgefleet.errors import InvalidInput

GOOD: dict[str, Any] = {
    "command": ["{python}", "-m", "srv", "--model", "{artifact:detector}", "--port", "{port}"],
    "env": {"MODEL_DIR": "{slot}", "THREADS": 1},
    "port": 9100,
    "health": {"http": "/healthz", "window_s": 30, "max_error_rate": 0.1, "min_requests": 5},
    "memory_limit_mb": 256,
}


def test_a_full_manifest_parses() -> None:
    manifest = parse_service_manifest(GOOD)
    assert manifest.port == 9100 and not manifest.auto_port
    assert manifest.env == {"MODEL_DIR": "{slot}", "THREADS": "1"}
    assert manifest.health.window_s == 30 and manifest.health.min_requests == 5
    assert manifest.artifact_names() == {"detector"}


def test_auto_port() -> None:
    manifest = parse_service_manifest({**GOOD, "port": "auto"})
    assert manifest.auto_port and manifest.port is None


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"command": []}, "command: must not be empty"),
        ({"command": "python srv.py"}, "command: must be a list of strings"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"port": 70000}, "port: must be a TCP port"),
        ({"port": None}, "health.http: needs the service's port"),
        ({"health": {"http": "healthz"}}, "health.http: must be a path"),
        ({"health": {"http": "/h", "command": ["true"]}}, "either http or command"),
        ({"health": {"window_s": -1}}, "health.window_s"),
        ({"health": {"max_error_rate": 2}}, "health.max_error_rate"),
        ({"command": ["{pyhton}"]}, "unknown placeholder '{pyhton}'"),
        ({"command": ["{artifact}"]}, "unknown placeholder '{artifact}'"),
        ({"memory_limit_mb": 4}, "memory_limit_mb"),
        ({"env": {"A": ["x"]}}, "env: must map names to strings"),
    ],
)
def test_bad_manifests_name_the_field(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_service_manifest({**GOOD, **change})
    assert fragment in refused.value.message
    assert refused.value.code == "invalid_service_manifest"


def test_placeholders_expand() -> None:
    artifacts = {"detector": "/slots/a/model.onnx"}
    word = "{python} {slot} {artifact:detector} {port}"
    assert expand_placeholders(word, "/usr/bin/python3", "/slots/a", artifacts, 9100) == (
        "/usr/bin/python3 /slots/a /slots/a/model.onnx 9100"
    )
    with pytest.raises(InvalidInput, match="unknown artifact 'labels'"):
        expand_placeholders("{artifact:labels}", "p", "s", artifacts, 1)
