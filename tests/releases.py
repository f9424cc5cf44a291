"""Operator-side helpers for tests of model updates: a root of trust on a real server, and
releases pushed and signed exactly as `edgefleet releases sign` does it."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgefleet.artifacts.model_builder import save_model
from edgefleet.cli.releases import push_file
from edgefleet.client import FleetClient
from edgefleet.core.updates.release import ArtifactKind
from edgefleet.security.tuf_keys import generate_signing_key, public_key_from_dict
from edgefleet.security.tuf_metadata import RoleKeys, build_root, sign_metadata


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Trust:
    """Operators' keys for one control plane, with its root installed."""

    root_keys: list[Any]
    targets_keys: list[Any]
    targets_threshold: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def install(cls, client: FleetClient, targets_keys: int = 1, threshold: int = 1) -> Trust:
        trust = cls(
            [generate_signing_key()],
            [generate_signing_key() for _ in range(targets_keys)],
            threshold,
        )
        online = client.online_keys()
        root = build_root(
            root=RoleKeys(tuple(k.public_key for k in trust.root_keys)),
            targets=RoleKeys(tuple(k.public_key for k in trust.targets_keys), threshold),
            snapshot=RoleKeys((public_key_from_dict(online["snapshot"]),)),
            timestamp=RoleKeys((public_key_from_dict(online["timestamp"]),)),
            expires=datetime.now(UTC) + timedelta(days=365),
        )
        for key in trust.root_keys:
            root = sign_metadata(root, key)
        client.initialize_trust(json.loads(root))
        return trust


def service_manifest(port: int, model: str, window_s: float = 2) -> str:
    return json.dumps(
        {
            "command": [
                "{python}",
                "-m",
                "edgefleet.examples.inference_server",
                "--model",
                f"{{artifact:{model}}}",
                "--port",
                "{port}",
            ],
            "port": port,
            "health": {"http": "/healthz", "window_s": window_s, "interval_s": 0.5},
        }
    )


def fine_tuned(model: onnx.ModelProto, scale: float, seed: int) -> onnx.ModelProto:
    """Every weight nudged a little, as a fine-tune does (a model a delta pays off for)."""
    rng = np.random.default_rng(seed)
    tuned = onnx.ModelProto()
    tuned.CopyFrom(model)
    for i, tensor in enumerate(tuned.graph.initializer):
        values = numpy_helper.to_array(tensor)
        nudged = values + rng.normal(0, scale * float(values.std() or 1), values.shape)
        tuned.graph.initializer[i].CopyFrom(
            numpy_helper.from_array(nudged.astype(values.dtype), tensor.name)
        )
    return tuned


def publish(
    client: FleetClient,
    workdir: Path,
    name: str,
    version: str,
    model: onnx.ModelProto,
    port: int,
    signers: list[Any],
    requires: list[str] | None = None,
    window_s: float = 2,
    expires: str | None = None,
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Push a model and a service manifest (the inference server's unless `manifest` is
    given), create the release, sign it with `signers`."""
    workdir.mkdir(parents=True, exist_ok=True)
    model_path = save_model(model, workdir / f"{name}-{version}.onnx")
    model_name = f"{name}-model"
    push_file(client, model_path, model_name, version, ArtifactKind.ONNX_MODEL, requires or [])
    service = workdir / f"{name}-{version}-service.json"
    service.write_text(json.dumps(manifest) if manifest is not None
                       else service_manifest(port, model_name, window_s))  # fmt: skip
    push_file(client, service, f"{name}-service", version, ArtifactKind.SERVICE, [])
    client.create_release(name, version, [f"{model_name}@{version}", f"{name}-service@{version}"])
    staged = client.stage_release(name, version, expires)
    for signer in signers:
        staged = sign_metadata(staged, signer)
    return client.publish_release(name, version, staged)
