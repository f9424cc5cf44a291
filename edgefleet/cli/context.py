"""Where the CLI finds its server and token: flags, then EDGEFLEET_* variables, then the
config file (`~/.config/edgefleet/config.toml`, or EDGEFLEET_CONFIG)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edgefleet.atomicfile import write_atomically
from edgefleet.client import FleetClient
from edgefleet.errors import SettingsError


def default_config_path() -> Path:
    explicit = os.environ.get("EDGEFLEET_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgefleet" / "config.toml"


def read_config(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SettingsError(f"config file {path} is not valid TOML: {e}") from e
    return {k: str(v) for k, v in raw.items() if k in ("server", "token")}


def write_config(path: Path, server: str, token: str) -> None:
    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    write_atomically(path, f"server = {q(server)}\ntoken = {q(token)}\n".encode(), mode=0o600)


@dataclass
class CliContext:
    server: str | None
    token: str | None
    config_path: Path

    def resolved(self) -> tuple[str, str | None]:
        config = read_config(self.config_path)
        server = self.server or config.get("server")
        token = self.token or config.get("token")
        if not server:
            raise SettingsError(
                "no server given: use --server URL, EDGEFLEET_SERVER, or `edgefleet login`"
            )
        return server, token

    def client(self) -> FleetClient:
        server, token = self.resolved()
        return FleetClient(server, token)
