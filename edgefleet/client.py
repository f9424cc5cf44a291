"""The typed operator client: how the CLI, the simulator and the dashboard reach the server.

Every method returns the server's JSON (dicts with stable field names; typed where
`client_views.py` declares the document) or raises from the error tree: ApiError with the
server's code and message, Unavailable when unreachable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from edgefleet.client_views import (
    AppliedPolicyView,
    AppliedReleaseTrainView,
    AppliedRoleView,
    AppliedWorkloadView,
    ApprovedChangeView,
    ChangeView,
    CreatedRolloutView,
    DeletedView,
    ExplanationView,
    MigrationView,
    MoveView,
    NodeView,
    PlacementView,
    PolicyTestView,
    PolicyView,
    RehearsalView,
    RehearsalWithReportView,
    ReleaseTrainView,
    RoleView,
    RolloutListItemView,
    RolloutSummaryView,
    ServiceEndpointsView,
    WorkloadStatusView,
)
from edgefleet.errors import ApiError, Unavailable
from edgefleet.transport.messages import error_from_response

DEFAULT_TIMEOUT_S = 30.0


def _seg(value: str) -> str:
    """One path segment, percent-encoded (names may hold spaces or slashes)."""
    return quote(value, safe="")


class FleetClient:
    def __init__(self, server_url: str, token: str | None, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.server_url = server_url.rstrip("/")
        headers = {"user-agent": "edgefleet-cli"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.server_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | Iterator[bytes] | None = None,
        raw: bool = False,
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=json, params=clean, content=content)
        except httpx.TimeoutException as e:
            raise Unavailable(f"{self.server_url}: request timed out") from e
        except httpx.TransportError as e:
            raise Unavailable(f"cannot reach {self.server_url}: {e or type(e).__name__}") from e
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        if raw:
            return response.content
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "bad_response", "invalid JSON") from None

    # Server

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")

    def whoami(self) -> dict[str, Any]:
        return self._call("GET", "/v1/whoami")

    # Devices

    def list_devices(
        self,
        selector: str | None = None,
        group: str | None = None,
        status: str | None = None,
        enrollment: str | None = None,
    ) -> list[dict[str, Any]]:
        params = {"selector": selector, "group": group, "status": status, "enrollment": enrollment}
        return self._call("GET", "/v1/devices", params=params)

    def get_device(self, device: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/devices/{_seg(device)}")

    def get_attestation(self, device: str) -> dict[str, Any]:
        """The device's latest attestation (status, reason, PCRs, measurement)."""
        return self._call("GET", f"/v1/devices/{_seg(device)}/attestation")

    def list_attestations(self) -> list[dict[str, Any]]:
        """The latest attestation of every device this token may list."""
        return self._call("GET", "/v1/attestations")

    def change_enrollment(self, device: str, action: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/devices/{_seg(device)}/{action}")

    def label_device(
        self, device: str, set_labels: dict[str, str], remove: list[str]
    ) -> dict[str, Any]:
        body = {"set": set_labels, "remove": remove}
        return self._call("POST", f"/v1/devices/{_seg(device)}/labels", json=body)

    def configure_device(self, device: str, heartbeat_interval_s: float) -> dict[str, Any]:
        body = {"heartbeat_interval_s": heartbeat_interval_s}
        return self._call("PATCH", f"/v1/devices/{_seg(device)}/config", json=body)

    # Tokens

    def create_api_token(
        self, name: str, role: str, expires_in_s: float | None = None, scope: str | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "role": role, "expires_in_s": expires_in_s, "scope": scope}
        return self._call("POST", "/v1/tokens", json=body)

    def list_api_tokens(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/tokens")

    def device_ca_certificate(self) -> str:
        """The device CA's certificate (PEM), which brokers and devices trust."""
        data: bytes = self._call("GET", "/v1/device-ca/certificate", raw=True)
        return data.decode()

    def device_ca_crl(self) -> str:
        """The device CA's certificate revocation list (PEM)."""
        data: bytes = self._call("GET", "/v1/device-ca/crl", raw=True)
        return data.decode()

    def delete_device(self, device: str) -> dict[str, Any]:
        """Decommission a device (by id or name); the answer is the device as it was."""
        return self._call("DELETE", f"/v1/devices/{_seg(device)}")

    def revoke_api_token(self, token_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/tokens/{_seg(token_id)}")

    def create_enrollment_token(
        self,
        description: str = "",
        auto_approve: bool = False,
        expires_in_s: float | None = None,
        max_uses: int | None = None,
    ) -> dict[str, Any]:
        body = {
            "description": description,
            "auto_approve": auto_approve,
            "expires_in_s": expires_in_s,
            "max_uses": max_uses,
        }
        return self._call("POST", "/v1/enrollment-tokens", json=body)

    def list_enrollment_tokens(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/enrollment-tokens")

    def revoke_enrollment_token(self, token_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/enrollment-tokens/{_seg(token_id)}")

    # hawkBit DDI

    def create_ddi_target(self, controller_id: str, labels: dict[str, str]) -> dict[str, Any]:
        """An approved DDI device; the answer carries its TargetToken (`token`) once."""
        body = {"controller_id": controller_id, "labels": labels}
        return self._call("POST", "/v1/ddi/targets", json=body)

    def create_ddi_gateway_token(self, description: str = "", auto_approve: bool = False
                                 ) -> dict[str, Any]:  # fmt: skip
        body = {"description": description, "auto_approve": auto_approve}
        return self._call("POST", "/v1/ddi/gateway-tokens", json=body)

    def list_ddi_gateway_tokens(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/ddi/gateway-tokens")

    def revoke_ddi_gateway_token(self, token_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/ddi/gateway-tokens/{_seg(token_id)}")

    # Groups

    def create_group(self, name: str, selector: str, description: str = "") -> dict[str, Any]:
        body = {"name": name, "selector": selector, "description": description}
        return self._call("POST", "/v1/groups", json=body)

    def list_groups(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/groups")

    def get_group(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/groups/{_seg(name)}")

    def delete_group(self, name: str) -> None:
        self._call("DELETE", f"/v1/groups/{_seg(name)}")

    # Audit

    def audit_page(self, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        params = {"after": after, "limit": limit}
        return self._call("GET", "/v1/audit", params=params)

    def audit_tail(self, count: int) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/audit", params={"tail": count})

    # Blobs, artifacts, releases

    def put_blob(self, path: Path, sha256: str) -> dict[str, Any]:
        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        return self._call("PUT", f"/v1/blobs/{sha256}", content=chunks())

    def create_artifact(
        self,
        name: str,
        version: str,
        kind: str,
        sha256: str,
        file_name: str,
        requires: list[str],
    ) -> dict[str, Any]:
        body = {
            "name": name,
            "version": version,
            "kind": kind,
            "sha256": sha256,
            "file_name": file_name,
            "requires": requires,
        }
        return self._call("POST", "/v1/artifacts", json=body)

    def list_artifacts(self, name: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/artifacts", params={"name": name})

    def get_artifact(self, name: str, version: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/artifacts/{_seg(name)}/{_seg(version)}")

    def delta_stats(self, name: str, compute: bool = False) -> list[dict[str, Any]]:
        params = {"compute": "true" if compute else None}
        return self._call("GET", f"/v1/artifacts/{_seg(name)}/deltas", params=params)

    def create_release(
        self,
        name: str,
        version: str,
        artifacts: list[str],
        service: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a release; `service` (file name, manifest text) is created with it as the
        artifact NAME-service@VERSION, both or neither."""
        body: dict[str, Any] = {"name": name, "version": version, "artifacts": artifacts}
        if service is not None:
            body["service"] = {"file_name": service[0], "content": service[1]}
        return self._call("POST", "/v1/releases", json=body)

    def list_releases(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/releases")

    def get_release(self, name: str, version: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/releases/{_seg(name)}/{_seg(version)}")

    def stage_release(self, name: str, version: str, expires: str | None = None) -> bytes:
        """Unsigned targets metadata listing the release, for operators to sign."""
        path = f"/v1/releases/{_seg(name)}/{_seg(version)}/staged-targets"
        return self._call("POST", path, params={"expires": expires}, raw=True)

    def publish_release(self, name: str, version: str, signed_targets: bytes) -> dict[str, Any]:
        path = f"/v1/releases/{_seg(name)}/{_seg(version)}/signed-targets"
        return self._call("POST", path, content=signed_targets)

    def assign_release(
        self,
        name: str,
        version: str,
        device: str | None = None,
        selector: str | None = None,
        stage_only: bool = False,
    ) -> dict[str, Any]:
        body = {"device": device, "selector": selector, "stage_only": stage_only}
        path = f"/v1/releases/{_seg(name)}/{_seg(version)}/assign"
        return self._call("POST", path, json=body)

    def activate(self, device: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/devices/{_seg(device)}/activate")

    # Trust (TUF)

    def trust_status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/trust")

    def online_keys(self) -> dict[str, Any]:
        return self._call("GET", "/v1/trust/online-keys")

    def initialize_trust(self, root: Any) -> dict[str, Any]:
        return self._call("POST", "/v1/trust/root", json={"root": root})

    def rotate_root(self, root: Any, targets: Any = None) -> dict[str, Any]:
        return self._call("PUT", "/v1/trust/root", json={"root": root, "targets": targets})

    def tuf_metadata(self, filename: str) -> bytes:
        return self._call("GET", f"/v1/tuf/{_seg(filename)}", raw=True)

    # Telemetry and alerts

    def telemetry_query(
        self,
        metric: str,
        device: str | None = None,
        selector: str | None = None,
        since: str = "1h",
        until: str | None = None,
        quantile: float | None = None,
        step: str | None = None,
    ) -> dict[str, Any]:
        params = {
            "metric": metric,
            "device": device,
            "selector": selector,
            "since": since,
            "until": until,
            "quantile": quantile,
            "step": step,
        }
        return self._call("GET", "/v1/telemetry/query", params=params)

    def telemetry_kpis(
        self,
        device: str | None = None,
        selector: str | None = None,
        metric: str = "inference.latency_ms",
        since: str = "1h",
        until: str | None = None,
        quantile: float = 0.95,
    ) -> dict[str, Any]:
        params = {
            "metric": metric,
            "device": device,
            "selector": selector,
            "since": since,
            "until": until,
            "quantile": quantile,
        }
        return self._call("GET", "/v1/telemetry/kpis", params=params)

    def telemetry_status(self, device: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/telemetry/devices/{_seg(device)}")

    def telemetry_metrics(self, device: str, since: str = "24h") -> list[str]:
        return self._call(
            "GET", f"/v1/telemetry/devices/{_seg(device)}/metrics", params={"since": since}
        )

    def telemetry_policy(self) -> dict[str, Any]:
        return self._call("GET", "/v1/telemetry/policy")

    def set_telemetry_policy(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", "/v1/telemetry/policy", json={"manifest": manifest})

    def telemetry_sealing(self) -> dict[str, Any]:
        """Whether devices seal their telemetry, and the ingest key they seal to."""
        return self._call("GET", "/v1/telemetry/sealing")

    def set_telemetry_sealing(self, enabled: bool, rotate: bool = False) -> dict[str, Any]:
        """Turn sealed telemetry on or off; `rotate` makes a new ingest key."""
        body = {"enabled": enabled, "rotate": rotate}
        return self._call("PUT", "/v1/telemetry/sealing", json=body)

    def list_alerts(
        self,
        include_closed: bool = False,
        device: str | None = None,
        closed_within: str = "24h",
    ) -> list[dict[str, Any]]:
        params = {"all": include_closed, "device": device, "closed_within": closed_within}
        return self._call("GET", "/v1/alerts", params=params)

    def prometheus_metrics(self) -> str:
        data: bytes = self._call("GET", "/metrics", raw=True)
        return data.decode()

    # Rollouts and release trains

    def create_rollout(
        self, manifest: dict[str, Any], supersede: bool = False, dry_run: bool = False
    ) -> CreatedRolloutView:
        """Create a rollout; `created` is False when an identical one was already active.
        With `dry_run` nothing is stored: the answer adds the devices and the wave plan."""
        body = {"manifest": manifest, "supersede": supersede}
        params = {"dry_run": "true"} if dry_run else None
        return self._call("POST", "/v1/rollouts", json=body, params=params)

    def list_rollouts(self, active: bool = False) -> list[RolloutListItemView]:
        return self._call("GET", "/v1/rollouts", params={"active": "true" if active else None})

    def get_rollout(self, rollout: str) -> dict[str, Any]:
        """Status: waves with device counts, gate evaluations, devices."""
        return self._call("GET", f"/v1/rollouts/{_seg(rollout)}")

    def approve_rollout(self, rollout: str, note: str = "") -> RolloutSummaryView:
        """Approve a rollout awaiting a second operator."""
        return self._call("POST", f"/v1/rollouts/{_seg(rollout)}/approve", json={"note": note})

    # Governance

    def apply_policy(self, manifest: dict[str, Any], dry_run: bool = False) -> AppliedPolicyView:
        params = {"dry_run": "true"} if dry_run else None
        return self._call("PUT", "/v1/policies", json={"manifest": manifest}, params=params)

    def list_policies(self) -> list[PolicyView]:
        return self._call("GET", "/v1/policies")

    def delete_policy(self, name: str) -> DeletedView:
        return self._call("DELETE", f"/v1/policies/{_seg(name)}")

    def apply_role(self, manifest: dict[str, Any], dry_run: bool = False) -> AppliedRoleView:
        params = {"dry_run": "true"} if dry_run else None
        return self._call("PUT", "/v1/roles", json={"manifest": manifest}, params=params)

    def list_roles(self) -> list[RoleView]:
        return self._call("GET", "/v1/roles")

    def get_role(self, name: str) -> RoleView:
        return self._call("GET", f"/v1/roles/{_seg(name)}")

    def delete_role(self, name: str) -> DeletedView:
        return self._call("DELETE", f"/v1/roles/{_seg(name)}")

    def test_policy(self, manifest: dict[str, Any]) -> PolicyTestView:
        """What the stored policies say about a Rollout or Workload manifest."""
        return self._call("POST", "/v1/policies/test", json={"manifest": manifest})

    def list_changes(self) -> list[ChangeView]:
        return self._call("GET", "/v1/changes")

    def approve_change(self, change_id: str) -> ApprovedChangeView:
        """Approve (and apply) another admin's pending trust change."""
        return self._call("POST", f"/v1/changes/{_seg(change_id)}/approve")

    def rollout_command(self, rollout: str, command: str, note: str = "") -> RolloutSummaryView:
        """pause | resume | abort | rollback."""
        path = f"/v1/rollouts/{_seg(rollout)}/{_seg(command)}"
        return self._call("POST", path, json={"note": note})

    def rollout_report(self, rollout: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/rollouts/{_seg(rollout)}/report")

    def rollout_report_markdown(self, rollout: str) -> str:
        path = f"/v1/rollouts/{_seg(rollout)}/report"
        data: bytes = self._call("GET", path, params={"format": "markdown"}, raw=True)
        return data.decode()

    def save_rehearsal(self, rollout: str, report: dict[str, Any]) -> RehearsalView:
        """Store a lab rehearsal report under the rollout's name."""
        return self._call("POST", "/v1/rehearsals", json={"rollout": rollout, "report": report})

    def list_rehearsals(self, rollout: str | None = None) -> list[RehearsalView]:
        params = {"rollout": rollout} if rollout else None
        return self._call("GET", "/v1/rehearsals", params=params)

    def get_rehearsal(self, rehearsal_id: str) -> RehearsalWithReportView:
        return self._call("GET", f"/v1/rehearsals/{_seg(rehearsal_id)}")

    def apply_release_train(
        self, manifest: dict[str, Any], dry_run: bool = False
    ) -> AppliedReleaseTrainView:
        params = {"dry_run": "true"} if dry_run else None
        return self._call("PUT", "/v1/release-trains", json={"manifest": manifest}, params=params)

    def apply_training(self, manifest: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        params = {"dry_run": "true"} if dry_run else None
        return self._call("POST", "/v1/training", json=manifest, params=params)

    def training_jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/training")

    def training_status(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/training/{_seg(name)}")

    def training_report(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/training/{_seg(name)}/report")

    def change_training(self, name: str, action: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/training/{_seg(name)}/{action}")

    def list_release_trains(self) -> list[ReleaseTrainView]:
        return self._call("GET", "/v1/release-trains")

    def get_release_train(self, name: str) -> ReleaseTrainView:
        return self._call("GET", f"/v1/release-trains/{_seg(name)}")

    # Workloads, placements, migrations, service endpoints

    def apply_workload(
        self, manifest: dict[str, Any], dry_run: bool = False
    ) -> AppliedWorkloadView:
        """Create or update a workload from its manifest (either shape); with `dry_run`,
        only say what would happen."""
        meta = manifest.get("metadata")
        name = meta.get("name") if "spec" in manifest and isinstance(meta, dict) else None
        name = name or manifest.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "invalid_input", "the manifest has no name (metadata.name)")
        params = {"dry_run": "true"} if dry_run else None
        return self._call(
            "PUT", f"/v1/workloads/{_seg(name)}", json={"manifest": manifest}, params=params
        )

    def list_workloads(self) -> list[WorkloadStatusView]:
        return self._call("GET", "/v1/workloads")

    def get_workload(self, name: str) -> WorkloadStatusView:
        return self._call("GET", f"/v1/workloads/{_seg(name)}")

    def delete_workload(self, name: str) -> None:
        self._call("DELETE", f"/v1/workloads/{_seg(name)}")

    def migrate_workload(
        self, name: str, replica: int = 0, to: str | None = None, selector: str | None = None
    ) -> MigrationView:
        body = {"replica": replica, "to": to, "selector": selector}
        return self._call("POST", f"/v1/workloads/{_seg(name)}/migrations", json=body)

    def abort_migrations(self, name: str) -> list[MigrationView]:
        return self._call("POST", f"/v1/workloads/{_seg(name)}/migrations/abort")

    def workload_migrations(self, name: str) -> list[MigrationView]:
        return self._call("GET", f"/v1/workloads/{_seg(name)}/migrations")

    def workload_moves(self, name: str) -> list[MoveView]:
        """The workload's replica moves (placements, failovers, migrations), newest first."""
        return self._call("GET", f"/v1/workloads/{_seg(name)}/moves")

    def placement(self, name: str) -> PlacementView:
        return self._call("GET", f"/v1/placements/{_seg(name)}")

    def explain_placement(self, name: str) -> ExplanationView:
        return self._call("GET", f"/v1/placements/{_seg(name)}/explain")

    def service_endpoints(self, name: str) -> ServiceEndpointsView:
        return self._call("GET", f"/v1/services/{_seg(name)}/endpoints")

    def list_nodes(self) -> list[NodeView]:
        """Nodes as the workload controllers see them (liveness, phi, drain, power)."""
        return self._call("GET", "/v1/nodes")
