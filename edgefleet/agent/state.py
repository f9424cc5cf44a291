"""What the agent keeps on disk between runs: its device id and what it last applied.

One JSON file, replaced atomically, so a kill at any instant leaves the previous state or
the new one; the key lives beside it in its own 0600 file (security.keys).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgefleet.atomicfile import write_json_atomically
from edgefleet.errors import SettingsError

STATE_FILE = "agent-state.json"
KEY_FILE = "device.key"


@dataclass(frozen=True)
class AgentState:
    server_url: str | None = None
    device_id: str | None = None
    enrollment: str | None = None
    applied_generation: int = 0
    desired: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> AgentState:
        path = data_dir / STATE_FILE
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            return cls(**raw)
        except (ValueError, TypeError) as e:
            raise SettingsError(f"agent state {path} is unreadable: {e}") from e

    def save(self, data_dir: Path) -> None:
        write_json_atomically(data_dir / STATE_FILE, asdict(self), mode=0o600)
