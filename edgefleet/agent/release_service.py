"""The service a release runs: its manifest, turned into a supervisor spec for one slot."""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgefleet.agent.supervisor import HealthCheckSpec, ServiceSpec
from edgefleet.agent.telemetry.otlp_receiver import otlp_env
from edgefleet.core.updates.service_manifest import (
    ServiceManifest,
    expand_placeholders,
    parse_service_manifest,
    resolve_parameters,
)

SERVICE_NAME = "release"


def manifest_of(slot_manifest: Mapping[str, Any] | None) -> ServiceManifest | None:
    """The service manifest a filled slot carries, if its release has one."""
    if not slot_manifest or slot_manifest.get("service") is None:
        return None
    return parse_service_manifest(slot_manifest["service"])


def pick_free_port() -> int:
    """A loopback TCP port nobody listens on now (for manifests with `port: auto`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_spec(
    manifest: ServiceManifest,
    slot_dir: Path,
    slot_manifest: Mapping[str, Any],
    log_dir: Path,
    statsd_address: str | None,
    state_dir: Path,
    otlp_address: str | None = None,
) -> ServiceSpec:
    """How to run `manifest` from `slot_dir`: placeholders expanded, artifact paths in env.
    A `port: auto` service uses the port chosen when its slot was filled; EDGEFLEET_STATSD
    and the OTLP variables (`otlp_env`) name the agent's KPI endpoints when it has them. A
    release's service has no workload to set its parameters: each takes its signed default
    (InvalidInput if one has none)."""
    files = {name: str(slot_dir / file) for name, file in slot_manifest["files"].items()}
    python = sys.executable
    port = slot_manifest.get("port") if manifest.auto_port else manifest.port
    parameters = resolve_parameters(manifest, {})

    def expand(word: str) -> str:
        return expand_placeholders(word, python, str(slot_dir), files, port, str(state_dir),
                                   parameters)  # fmt: skip

    env = {key: expand(value) for key, value in manifest.env.items()}
    env["EDGEFLEET_SLOT"] = str(slot_dir)
    env["EDGEFLEET_STATE_DIR"] = str(state_dir)  # under a service user, the one it may write
    for name, path in files.items():
        env[f"EDGEFLEET_ARTIFACT_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}"] = path
    models = [files[n] for n, kind in slot_manifest["kinds"].items() if kind == "onnx-model"]
    if models:
        env["EDGEFLEET_MODEL_PATH"] = sorted(models)[0]
    if port is not None:
        env["EDGEFLEET_SERVICE_PORT"] = str(port)
    if statsd_address:
        env.setdefault("EDGEFLEET_STATSD", statsd_address)
    for key, value in otlp_env(otlp_address).items():
        env.setdefault(key, value)
    health = None
    criteria = manifest.health
    if criteria.http_path is not None:
        health = HealthCheckSpec(
            http_url=f"http://127.0.0.1:{port}{criteria.http_path}",
            interval_s=criteria.interval_s,
            timeout_s=max(1.0, criteria.interval_s),
        )
    elif criteria.command:
        health = HealthCheckSpec(
            command=tuple(expand(w) for w in criteria.command),
            interval_s=criteria.interval_s,
            timeout_s=max(1.0, criteria.interval_s),
        )
    return ServiceSpec(
        name=SERVICE_NAME,
        command=tuple(expand(w) for w in manifest.command),
        env=env,
        cwd=slot_dir,
        log_path=log_dir / f"{SERVICE_NAME}.log",
        health=health,
        memory_limit_mb=manifest.memory_limit_mb,
    )
