"""Service manifests: validation naming the field, and placeholder expansion."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.core.updates.service_manifest import (
    expand_placeholders,
    parse_service_manifest,
    resolve_parameters,
)
from edgefleet.errors import InvalidInput

GOOD: dict[str, Any] = {
    "command": ["{python}", "-m", "srv", "--model", "{artifact:detector}", "--port", "{port}"],
    "env": {"MODEL_DIR": "{slot}", "THREADS": 1},
    "port": 9100,
    "health": {
        "http": "/healthz",
        "window_s": 30,
        "max_error_rate": 0.1,
        "min_requests": 5,
        "start_period_s": 90,
    },
    "memory_limit_mb": 256,
}


def test_a_full_manifest_parses() -> None:
    manifest = parse_service_manifest(GOOD)
    assert manifest.port == 9100 and not manifest.auto_port
    assert manifest.env == {"MODEL_DIR": "{slot}", "THREADS": "1"}
    assert manifest.health.window_s == 30 and manifest.health.min_requests == 5
    assert manifest.health.start_period_s == 90
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
        ({"health": {"start_period_s": -1}}, "health.start_period_s"),
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


PARAMETERS: dict[str, Any] = {
    **GOOD,
    "command": [*GOOD["command"], "--threads", "{param:threads}", "--mode", "{param:mode}"],
    "env": {"TAG": "{param:tag}", "FAST": "{param:fast}", "RATIO": "{param:ratio}"},
    "parameters": {
        "threads": {"type": "integer", "minimum": 1, "maximum": 8, "default": 1},
        "mode": {"type": "string", "enum": ["fast", "accurate"], "default": "fast"},
        "tag": {"type": "string", "pattern": "[a-z0-9-]{1,16}"},
        "fast": {"type": "boolean", "default": False},
        "ratio": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
    },
}


def test_declared_parameters_resolve_with_defaults_and_bounds() -> None:
    manifest = parse_service_manifest(PARAMETERS)
    assert resolve_parameters(manifest, {"tag": "cam-1"}) == {
        "threads": "1",
        "mode": "fast",
        "tag": "cam-1",
        "fast": "false",
        "ratio": "0.5",
    }
    values = resolve_parameters(manifest, {"tag": "x", "threads": 8, "fast": True})
    word = expand_placeholders("{param:threads}/{param:fast}", "p", "s", {}, 1, None, values)
    assert word == "8/true"


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({}, "parameters.tag: required"),
        ({"tag": "x", "threads": 9}, "parameters.threads: 9 is above the maximum 8"),
        ({"tag": "x", "threads": 1.5}, "parameters.threads: expected an integer"),
        ({"tag": "x", "mode": "turbo"}, "not one of fast, accurate"),
        ({"tag": "x; rm -rf /"}, "does not match the pattern"),
        ({"tag": "x\n"}, "control characters are not allowed"),
        ({"tag": "a", "fast": "yes"}, "expected true or false"),
        ({"tag": "a", "script": "x"}, "parameters.script: not a parameter"),
        ({"tag": "a", "ratio": float("nan")}, "parameters.ratio"),
    ],
)
def test_parameters_out_of_their_signed_bounds_are_refused(
    values: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        resolve_parameters(parse_service_manifest(PARAMETERS), values)
    assert fragment in refused.value.message
    assert refused.value.code == "invalid_parameter"


@pytest.mark.parametrize(
    ("declaration", "fragment"),
    [
        ({"type": "string"}, "declares an enum or a pattern"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "larger than maximum"),
        ({"type": "integer", "default": 99, "maximum": 8}, "default"),
        ({"type": "list"}, "type: must be one of"),
        ({"type": "integer", "enum": ["a"]}, "for string parameters"),
        ({"type": "string", "pattern": "("}, "not a regular expression"),
    ],
)
def test_bad_parameter_declarations_name_the_field(
    declaration: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_service_manifest({**GOOD, "parameters": {"p": declaration}})
    assert fragment in refused.value.message


def test_a_placeholder_must_name_a_declared_parameter() -> None:
    with pytest.raises(InvalidInput, match="names no declared parameter"):
        parse_service_manifest({**GOOD, "command": ["srv", "{param:nope}"]})
