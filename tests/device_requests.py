"""Hand-made device requests over plain HTTP, for tests that play a device or an attacker.

Uses edgefleet's own signing functions (what a real agent does) but lets a test reuse,
alter or redirect the exact bytes and headers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from edgefleet.security.keys import DeviceKey, device_id_for
from edgefleet.security.request_signing import sign_request

INVENTORY: dict[str, dict[str, Any]] = {
    "hardware": {"arch": "x86_64", "cpu_count": 2, "memory_mb": 1024, "disk_mb": 4096},
    "software": {"os": "linux", "python": "3.11", "agent_version": "test"},
}


@dataclass
class RawDevice:
    url: str
    key: DeviceKey = field(default_factory=DeviceKey.generate)
    clock_offset: timedelta = timedelta(0)

    @property
    def id(self) -> str:
        return device_id_for(self.key.public_key_b64)

    def signed(
        self, method: str, target: str, payload: Any = None, as_device: str | None = None
    ) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(payload).encode() if payload is not None else b""
        now = datetime.now(UTC) + self.clock_offset
        headers = sign_request(self.key, method, target, body, as_device or self.id, now)
        return body, {**headers, "content-type": "application/json"}

    def send(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        return httpx.request(method, self.url + target, content=body, headers=headers, timeout=30)

    def call(self, method: str, target: str, payload: Any = None) -> httpx.Response:
        body, headers = self.signed(method, target, payload)
        return self.send(method, target, body, headers)

    def enroll(
        self, token: str, name: str | None = None, labels: dict[str, str] | None = None
    ) -> httpx.Response:
        """Enroll as `name` (default: a name of its own; names are unique in a fleet)."""
        payload = {
            "enrollment_token": token,
            "public_key": self.key.public_key_b64,
            "name": name or f"raw-{self.id[2:12]}",
            "labels": labels or {},
            "inventory": INVENTORY,
        }
        return self.call("POST", "/v1/enroll", payload)

    def report(self, applied_generation: int = 0) -> httpx.Response:
        payload = {"applied_generation": applied_generation, "inventory": INVENTORY}
        return self.call("POST", f"/v1/devices/{self.id}/report", payload)
