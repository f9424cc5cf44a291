"""HTTP wire schemas: the controller leases replicas hold."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from edgefleet.core.lease import Lease


class LeaseOut(BaseModel):
    name: str = Field(
        description="The controller: housekeeping, rollout-controller, workload-controllers."
    )
    holder: str = Field(description="The replica id that holds (or last held) the lease.")
    token: int = Field(description="Fencing token: grows by one at every acquisition.")
    expires_at: datetime = Field(description="When the lease lapses unless renewed.")
    live: bool = Field(description="Whether expires_at is still ahead (this replica's clock).")

    @classmethod
    def of(cls, lease: Lease, now: datetime) -> LeaseOut:
        return cls(name=lease.name, holder=lease.holder, token=lease.token,
                   expires_at=lease.expires_at, live=lease.is_live(now))  # fmt: skip
