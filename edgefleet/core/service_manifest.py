"""Service manifests: how a release says to run its artifacts, and how to tell it is healthy.

A manifest is an artifact of kind `service` (YAML or JSON), signed with the rest of the
release, so a device only ever runs commands its operators signed::

    command: ["{python}", "-m", "edgefleet.workloads.inference_server",
              "--model", "{artifact:detector}", "--port", "{port}"]
    env: {OMP_NUM_THREADS: "1"}
    port: 9100                  # or "auto": the device picks a free port per install
    health:
      http: /healthz            # GET http://127.0.0.1:{port}/healthz must answer 2xx
      # command: ["{python}", "check.py"]   # or: a command that must exit 0
      window_s: 60              # watch this long after an install before committing
      max_error_rate: 0.05      # errors / requests over the window, from /healthz counters
      min_requests: 0           # below this many requests the error rate is not judged
    memory_limit_mb: 512

Placeholders, expanded on the device: `{python}` (the agent's interpreter), `{slot}` (the
directory holding the release's files), `{artifact:NAME}` (one artifact's file), `{port}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgefleet.errors import InvalidInput

MAX_MANIFEST_BYTES = 64 * 1024  # a service manifest file, on the server and on devices

DEFAULT_HEALTH_WINDOW_S = 60.0
_PLACEHOLDER_RE = re.compile(r"\{([a-z]+)(?::([A-Za-z0-9._-]+))?\}")
_KNOWN = {"python", "slot", "artifact", "port"}


@dataclass(frozen=True)
class HealthCriteria:
    http_path: str | None = None
    command: tuple[str, ...] = ()
    window_s: float = DEFAULT_HEALTH_WINDOW_S
    max_error_rate: float = 0.05
    min_requests: int = 0
    interval_s: float = 1.0


@dataclass(frozen=True)
class ServiceManifest:
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    health: HealthCriteria = field(default_factory=HealthCriteria)
    memory_limit_mb: int | None = None
    auto_port: bool = False

    def artifact_names(self) -> set[str]:
        """Artifacts the command and env refer to by `{artifact:NAME}`."""
        words = [*self.command, *self.env.values()]
        return {m.group(2) for w in words for m in _PLACEHOLDER_RE.finditer(w) if m.group(2)}


def _fail(path: str, problem: str) -> InvalidInput:
    return InvalidInput(f"service manifest: {path}: {problem}", code="invalid_service_manifest")


def _strings(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, "must be a list of strings")
    return tuple(value)


def _number(
    raw: Mapping[str, Any], key: str, default: float, low: float, high: float, path: str
) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _fail(f"{path}.{key}", f"must be a number from {low:g} to {high:g}")
    return float(value)


def _check_placeholders(words: tuple[str, ...], path: str) -> None:
    for word in words:
        for match in _PLACEHOLDER_RE.finditer(word):
            name, arg = match.group(1), match.group(2)
            if name not in _KNOWN or (name == "artifact") != (arg is not None):
                raise _fail(path, f"unknown placeholder {match.group(0)!r}")


def parse_service_manifest(raw: Any) -> ServiceManifest:
    """Validate a parsed manifest; InvalidInput names the offending field."""
    if not isinstance(raw, Mapping):
        raise _fail("(top)", "must be a mapping")
    unknown = set(raw) - {"command", "env", "port", "health", "memory_limit_mb"}
    if unknown:
        raise _fail(sorted(unknown)[0], "unknown field")
    if "command" not in raw:
        raise _fail("command", "field required")
    command = _strings(raw["command"], "command")
    if not command:
        raise _fail("command", "must not be empty")
    _check_placeholders(command, "command")
    env_raw = raw.get("env", {})
    if not isinstance(env_raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in env_raw.items()
    ):
        raise _fail("env", "must map names to strings")
    env = {k: str(v) for k, v in env_raw.items()}
    _check_placeholders(tuple(env.values()), "env")
    port = raw.get("port")
    auto_port = port == "auto"
    if auto_port:
        port = None
    elif port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        raise _fail("port", 'must be a TCP port (1-65535) or "auto"')
    health = _parse_health(raw.get("health", {}), port is not None or auto_port)
    memory = raw.get("memory_limit_mb")
    if memory is not None and (
        not isinstance(memory, int) or isinstance(memory, bool) or memory < 16
    ):
        raise _fail("memory_limit_mb", "must be an integer of at least 16")
    return ServiceManifest(command, env, port, health, memory, auto_port)


def _parse_health(raw: Any, has_port: bool) -> HealthCriteria:
    if not isinstance(raw, Mapping):
        raise _fail("health", "must be a mapping")
    unknown = set(raw) - {
        "http",
        "command",
        "window_s",
        "max_error_rate",
        "min_requests",
        "interval_s",
    }
    if unknown:
        raise _fail(f"health.{sorted(unknown)[0]}", "unknown field")
    http = raw.get("http")
    if http is not None:
        if not isinstance(http, str) or not http.startswith("/"):
            raise _fail("health.http", "must be a path such as /healthz")
        if not has_port:
            raise _fail("health.http", "needs the service's port")
    command = _strings(raw["command"], "health.command") if "command" in raw else ()
    if http is not None and command:
        raise _fail("health", "give either http or command, not both")
    _check_placeholders(command, "health.command")
    min_requests = raw.get("min_requests", 0)
    if not isinstance(min_requests, int) or isinstance(min_requests, bool) or min_requests < 0:
        raise _fail("health.min_requests", "must be a non-negative integer")
    return HealthCriteria(
        http_path=http,
        command=command,
        window_s=_number(raw, "window_s", DEFAULT_HEALTH_WINDOW_S, 0, 3600, "health"),
        max_error_rate=_number(raw, "max_error_rate", 0.05, 0, 1, "health"),
        min_requests=min_requests,
        interval_s=_number(raw, "interval_s", 1.0, 0.1, 60, "health"),
    )


def expand_placeholders(
    word: str, python: str, slot: str, artifacts: Mapping[str, str], port: int | None
) -> str:
    """Replace `{python}`, `{slot}`, `{artifact:NAME}` and `{port}` in one word."""

    def replace(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        if name == "python":
            return python
        if name == "slot":
            return slot
        if name == "port":
            return str(port) if port is not None else match.group(0)
        if arg not in artifacts:
            raise InvalidInput(
                f"service manifest refers to unknown artifact {arg!r}",
                code="invalid_service_manifest",
            )
        return artifacts[arg]

    return _PLACEHOLDER_RE.sub(replace, word)
