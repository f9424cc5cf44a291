"""Service manifests: how a release says to run its artifacts, and how to tell it is healthy.

A manifest is an artifact of kind `service` (YAML or JSON), signed with the rest of the
release, so a device only ever runs commands its operators signed::

    command: ["{python}", "-m", "edgefleet.examples.inference_server",
              "--model", "{artifact:detector}", "--port", "{port}"]
    env: {OMP_NUM_THREADS: "1"}
    port: 9100                  # or "auto": the device picks a free port per install
    health:
      http: /healthz            # GET http://127.0.0.1:{port}/healthz must answer 2xx
      # command: ["{python}", "check.py"]   # or: a command that must exit 0
      start_period_s: 60        # the service may take this long to answer its first probe
      window_s: 60              # then watch this long before committing
      max_error_rate: 0.05      # errors / requests over the window, from /healthz counters
      min_requests: 0           # below this many requests the error rate is not judged
    memory_limit_mb: 512
    parameters:                 # what a Workload may set, within these signed bounds
      threads: {type: integer, minimum: 1, maximum: 8, default: 1}
      mode: {type: string, enum: [fast, accurate], default: fast}

Placeholders, expanded on the device: `{python}` (the agent's interpreter), `{slot}` (the
directory holding the release's files), `{artifact:NAME}` (one artifact's file), `{port}`,
`{state_dir}` (the service's state directory) and `{param:NAME}` (a declared parameter).

A device runs nothing but these signed words: a Workload names the release and may set
only the declared parameters, each checked against its declared type and bounds on the
server when the workload is applied and again on the device before it runs (the device
does not trust the control plane's check). A parameter always fills one whole argument or
environment value (no shell), and a string parameter must declare an `enum` or a
`pattern`, so what a parameter can say is signed too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from edgefleet.errors import InvalidInput

MAX_MANIFEST_BYTES = 64 * 1024  # a service manifest file, on the server and on devices

DEFAULT_HEALTH_WINDOW_S = 60.0
# How long a freshly started service may take to answer its first probe (a model server
# loading its model) before the install is judged unhealthy; like a startup probe.
DEFAULT_START_PERIOD_S = 60.0
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)(?::([A-Za-z0-9._-]+))?\}")
_KNOWN = {"python", "slot", "artifact", "port", "state_dir", "param"}
_WITH_ARGUMENT = {"artifact", "param"}
_PARAMETER_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
MAX_PARAMETERS = 64
MAX_PARAMETER_LENGTH = 4096
# Characters a string parameter never carries, whatever its pattern allows: C0 and C1
# controls and DEL (a value is one argument; it has no business with terminal codes).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ParameterType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"


ParameterValue = str | int | float | bool


@dataclass(frozen=True)
class Parameter:
    """One value a Workload may set, with the bounds the release's signers allow."""

    name: str
    type: ParameterType
    default: ParameterValue | None = None  # None: the workload must set it
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    max_length: int = 256


@dataclass(frozen=True)
class HealthCriteria:
    http_path: str | None = None
    command: tuple[str, ...] = ()
    window_s: float = DEFAULT_HEALTH_WINDOW_S
    max_error_rate: float = 0.05
    min_requests: int = 0
    interval_s: float = 1.0
    start_period_s: float = DEFAULT_START_PERIOD_S


@dataclass(frozen=True)
class ServiceManifest:
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    health: HealthCriteria = field(default_factory=HealthCriteria)
    memory_limit_mb: int | None = None
    auto_port: bool = False
    parameters: Mapping[str, Parameter] = field(default_factory=dict)

    def artifact_names(self) -> set[str]:
        """Artifacts the command and env refer to by `{artifact:NAME}`."""
        words = [*self.command, *self.env.values()]
        return {
            m.group(2)
            for w in words
            for m in _PLACEHOLDER_RE.finditer(w)
            if m.group(1) == "artifact" and m.group(2)
        }


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


def _check_placeholders(
    words: tuple[str, ...], path: str, parameters: Mapping[str, Parameter]
) -> None:
    for word in words:
        for match in _PLACEHOLDER_RE.finditer(word):
            name, arg = match.group(1), match.group(2)
            if name not in _KNOWN or (name in _WITH_ARGUMENT) != (arg is not None):
                raise _fail(path, f"unknown placeholder {match.group(0)!r}")
            if name == "param" and arg not in parameters:
                raise _fail(path, f"{match.group(0)!r} names no declared parameter")


def parse_service_manifest(raw: Any) -> ServiceManifest:
    """Validate a parsed manifest; InvalidInput names the offending field."""
    if not isinstance(raw, Mapping):
        raise _fail("(top)", "must be a mapping")
    unknown = set(raw) - {"command", "env", "port", "health", "memory_limit_mb", "parameters"}
    if unknown:
        raise _fail(sorted(unknown)[0], "unknown field")
    if "command" not in raw:
        raise _fail("command", "field required")
    parameters = _parse_parameters(raw.get("parameters", {}))
    command = _strings(raw["command"], "command")
    if not command:
        raise _fail("command", "must not be empty")
    _check_placeholders(command, "command", parameters)
    env_raw = raw.get("env", {})
    if not isinstance(env_raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in env_raw.items()
    ):
        raise _fail("env", "must map names to strings")
    env = {k: str(v) for k, v in env_raw.items()}
    _check_placeholders(tuple(env.values()), "env", parameters)
    port = raw.get("port")
    auto_port = port == "auto"
    if auto_port:
        port = None
    elif port is not None and (
        isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
    ):
        raise _fail("port", 'must be a TCP port (1-65535) or "auto"')
    health = _parse_health(raw.get("health", {}), port is not None or auto_port, parameters)
    memory = raw.get("memory_limit_mb")
    if memory is not None and (
        not isinstance(memory, int) or isinstance(memory, bool) or memory < 16
    ):
        raise _fail("memory_limit_mb", "must be an integer of at least 16")
    return ServiceManifest(command, env, port, health, memory, auto_port, parameters)


def _parse_parameters(raw: Any) -> dict[str, Parameter]:
    if not isinstance(raw, Mapping):
        raise _fail("parameters", "must map names to declarations")
    if len(raw) > MAX_PARAMETERS:
        raise _fail("parameters", f"at most {MAX_PARAMETERS} parameters")
    return {
        name: _parse_parameter(name, declaration, f"parameters.{name}")
        for name, declaration in raw.items()
    }


def _parse_parameter(name: Any, raw: Any, path: str) -> Parameter:
    if not isinstance(name, str) or not _PARAMETER_NAME_RE.fullmatch(name):
        raise _fail(path, "a parameter name is lowercase letters, digits and '_' (at most 63)")
    if not isinstance(raw, Mapping):
        raise _fail(path, "must be a mapping with a type")
    unknown = set(raw) - {"type", "default", "minimum", "maximum", "enum", "pattern",
                          "max_length", "description"}  # fmt: skip
    if unknown:
        raise _fail(f"{path}.{sorted(unknown)[0]}", "unknown field")
    try:
        kind = ParameterType(str(raw.get("type")))
    except ValueError:
        raise _fail(f"{path}.type", "must be one of string, integer, number, boolean") from None
    numeric = kind in (ParameterType.INTEGER, ParameterType.NUMBER)
    bounds = {}
    for key in ("minimum", "maximum"):
        value = raw.get(key)
        if value is not None and (
            not numeric
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or value != value
            or value in (float("inf"), float("-inf"))
        ):
            raise _fail(f"{path}.{key}", "is a finite number, for integer and number types")
        bounds[key] = None if value is None else float(value)
    low, high = bounds["minimum"], bounds["maximum"]
    if low is not None and high is not None and low > high:
        raise _fail(f"{path}.minimum", "is larger than maximum")
    choices: tuple[str, ...] = ()
    pattern = None
    max_length = 256
    if kind is ParameterType.STRING:
        if "enum" in raw:
            choices = _strings(raw["enum"], f"{path}.enum")
            if not choices:
                raise _fail(f"{path}.enum", "must not be empty")
        if "pattern" in raw:
            pattern = raw["pattern"]
            if not isinstance(pattern, str):
                raise _fail(f"{path}.pattern", "must be a regular expression")
            try:
                re.compile(pattern)
            except re.error as e:
                raise _fail(f"{path}.pattern", f"is not a regular expression: {e}") from None
        if not choices and pattern is None:
            raise _fail(path, "a string parameter declares an enum or a pattern")
        length = raw.get("max_length", max_length)
        if (
            isinstance(length, bool)
            or not isinstance(length, int)
            or not (1 <= length <= MAX_PARAMETER_LENGTH)
        ):
            raise _fail(f"{path}.max_length", f"must be an integer from 1 to "
                                              f"{MAX_PARAMETER_LENGTH}")  # fmt: skip
        max_length = length
    elif any(key in raw for key in ("enum", "pattern", "max_length")):
        raise _fail(path, "enum, pattern and max_length are for string parameters")
    declared = Parameter(name, kind, None, low, high, choices, pattern, max_length)
    if "default" not in raw:
        return declared
    try:
        default = check_parameter(declared, raw["default"])
    except InvalidInput as e:
        raise _fail(f"{path}.default", e.message) from None
    return Parameter(name, kind, default, low, high, choices, pattern, max_length)


def check_parameter(parameter: Parameter, value: Any) -> ParameterValue:
    """`value` if it is of the parameter's type and within its bounds; InvalidInput says
    which bound it breaks.

    >>> threads = Parameter("threads", ParameterType.INTEGER, minimum=1, maximum=8)
    >>> check_parameter(threads, 4)
    4
    """
    kind = parameter.type
    if kind is ParameterType.BOOLEAN:
        if not isinstance(value, bool):
            raise InvalidInput(f"expected true or false, got {value!r}")
        return value
    if kind in (ParameterType.INTEGER, ParameterType.NUMBER):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"expected a number, got {value!r}")
        if kind is ParameterType.INTEGER and not (
            isinstance(value, int) or float(value).is_integer()
        ):
            raise InvalidInput(f"expected an integer, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInput(f"expected a finite number, got {value!r}")
        if parameter.minimum is not None and value < parameter.minimum:
            raise InvalidInput(f"{value!r} is below the minimum {parameter.minimum:g}")
        if parameter.maximum is not None and value > parameter.maximum:
            raise InvalidInput(f"{value!r} is above the maximum {parameter.maximum:g}")
        return int(value) if kind is ParameterType.INTEGER else float(value)
    if not isinstance(value, str):
        raise InvalidInput(f"expected a string, got {value!r}")
    if len(value) > parameter.max_length:
        raise InvalidInput(f"longer than {parameter.max_length} characters")
    if _CONTROL_RE.search(value):
        raise InvalidInput("control characters are not allowed")
    if parameter.choices and value not in parameter.choices:
        raise InvalidInput(f"{value!r} is not one of {', '.join(parameter.choices)}")
    if parameter.pattern is not None and not re.fullmatch(parameter.pattern, value):
        raise InvalidInput(f"{value!r} does not match the pattern {parameter.pattern!r}")
    return value


def resolve_parameters(manifest: ServiceManifest, values: Mapping[str, Any]) -> dict[str, str]:
    """Every declared parameter's value as the text placeholders take: the given value
    checked against its declaration, else the default. InvalidInput names the parameter
    when one is not declared, out of bounds, or required and missing.

    >>> m = parse_service_manifest({"command": ["srv", "--threads", "{param:threads}"],
    ...     "parameters": {"threads": {"type": "integer", "maximum": 8, "default": 1}}})
    >>> resolve_parameters(m, {"threads": 4})
    {'threads': '4'}
    """
    declared = manifest.parameters
    for name in values:
        if name not in declared:
            offered = ", ".join(sorted(declared)) or "none"
            raise InvalidInput(
                f"parameters.{name}: not a parameter of the release's signed service manifest "
                f"(it declares: {offered})",
                code="invalid_parameter",
            )
    resolved: dict[str, str] = {}
    for name, parameter in declared.items():
        if name in values:
            try:
                value = check_parameter(parameter, values[name])
            except InvalidInput as e:
                raise InvalidInput(f"parameters.{name}: {e.message}",
                                   code="invalid_parameter") from None  # fmt: skip
        elif parameter.default is not None:
            value = parameter.default
        else:
            raise InvalidInput(f"parameters.{name}: required by the release's service manifest",
                               code="invalid_parameter")  # fmt: skip
        resolved[name] = _parameter_text(value)
    return resolved


def _parameter_text(value: ParameterValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse_health(raw: Any, has_port: bool, parameters: Mapping[str, Parameter]) -> HealthCriteria:
    if not isinstance(raw, Mapping):
        raise _fail("health", "must be a mapping")
    unknown = set(raw) - {
        "http",
        "command",
        "window_s",
        "max_error_rate",
        "min_requests",
        "interval_s",
        "start_period_s",
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
    _check_placeholders(command, "health.command", parameters)
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
        start_period_s=_number(raw, "start_period_s", DEFAULT_START_PERIOD_S, 0, 3600, "health"),
    )


def expand_placeholders(
    word: str,
    python: str,
    slot: str,
    artifacts: Mapping[str, str],
    port: int | None,
    state_dir: str | None = None,
    parameters: Mapping[str, str] | None = None,
) -> str:
    """Replace `{python}`, `{slot}`, `{artifact:NAME}`, `{port}`, `{state_dir}` and
    `{param:NAME}` (from `resolve_parameters`) in one word."""

    def replace(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        if name == "python":
            return python
        if name == "slot":
            return slot
        if name == "port":
            return str(port) if port is not None else match.group(0)
        if name == "state_dir":
            return state_dir if state_dir is not None else match.group(0)
        if name == "param":
            if parameters is None or arg not in parameters:
                raise InvalidInput(f"service manifest refers to unresolved parameter {arg!r}",
                                   code="invalid_service_manifest")  # fmt: skip
            return parameters[arg]
        if arg not in artifacts:
            raise InvalidInput(
                f"service manifest refers to unknown artifact {arg!r}",
                code="invalid_service_manifest",
            )
        return artifacts[arg]

    return _PLACEHOLDER_RE.sub(replace, word)
