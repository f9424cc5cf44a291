"""The install journal: the installer writes where it is before each step, so a restart
continues from there (see edgefleet.core.updates.install.resume_action)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgefleet.atomicfile import write_json_atomically
from edgefleet.core.updates.install import InstallState


@dataclass(frozen=True)
class InstallRecord:
    name: str
    version: str
    serial: int
    state: InstallState
    stage_only: bool = False
    slot: str | None = None  # the slot being filled / switched in
    previous_slot: str | None = None  # the slot to return to on rollback
    reason: str = ""
    health_attempts: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    bytes_saved: int = 0

    def moved(self, state: InstallState, **changes: Any) -> InstallRecord:
        return replace(self, state=state, **changes)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> InstallRecord | None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        raw["state"] = InstallState(raw["state"])
        return InstallRecord(**raw)

    def clear(self) -> None:
        """Forget the install record (no release assigned any more)."""
        self.path.unlink(missing_ok=True)

    def save(self, record: InstallRecord) -> InstallRecord:
        data = asdict(record)
        data["state"] = record.state.value
        write_json_atomically(self.path, data)
        return record
