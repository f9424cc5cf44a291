"""Where the CLI finds its server and token: flags, then EDGEFLEET_* variables, then a
context of the config file (`~/.config/edgefleet/config.toml`, or EDGEFLEET_CONFIG).

The config file holds named contexts, like kubectl's, and which one is current:

    current-context = "prod"

    [contexts.prod]
    server = "https://fleet.example"
    token-file = "/home/me/.secrets/fleet-prod"   # read at each use

    [contexts.lab]
    server = "http://127.0.0.1:8080"
    token = "efa_..."

A file written by an earlier version (`server` and `token` at the top) reads as one context
named `default`. The file is written with mode 0600: it may hold tokens.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgefleet.atomicfile import write_atomically
from edgefleet.client import FleetClient
from edgefleet.errors import NotFound, SettingsError

DEFAULT_CONTEXT = "default"


def default_config_path() -> Path:
    explicit = os.environ.get("EDGEFLEET_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgefleet" / "config.toml"


@dataclass(frozen=True)
class Context:
    """One control plane and the credential to use there."""

    server: str | None = None
    token: str | None = None
    token_file: Path | None = None

    def read_token(self) -> str | None:
        """The token, from the file when the context names one (read at each use)."""
        if self.token_file is None:
            return self.token
        try:
            return self.token_file.read_text().strip() or None
        except OSError as e:
            raise SettingsError(f"cannot read the token file {self.token_file}: "
                                f"{e.strerror or e}") from e  # fmt: skip


@dataclass(frozen=True)
class CliConfig:
    """The config file's contents: named contexts and the current one."""

    contexts: dict[str, Context] = field(default_factory=dict)
    current: str | None = None

    def context(self, name: str) -> Context:
        if name not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise NotFound(f"no context {name!r} in the config file (contexts: {known})",
                           code="context_not_found")  # fmt: skip
        return self.contexts[name]

    def using(self, name: str) -> CliConfig:
        """This config with `name` (a context it has) as the current context."""
        self.context(name)
        return replace(self, current=name)

    def with_context(self, name: str, context: Context) -> CliConfig:
        return replace(self, contexts={**self.contexts, name: context})

    def without_context(self, name: str) -> CliConfig:
        self.context(name)
        rest = {k: v for k, v in self.contexts.items() if k != name}
        return CliConfig(rest, None if self.current == name else self.current)


def _context(name: str, raw: object, path: Path) -> Context:
    if not isinstance(raw, dict):
        raise SettingsError(f"config file {path}: contexts.{name} is not a table")
    unknown = set(raw) - {"server", "token", "token-file"}
    if unknown:
        raise SettingsError(f"config file {path}: contexts.{name} has unknown keys "
                            f"{', '.join(sorted(unknown))}")  # fmt: skip
    token_file = raw.get("token-file")
    return Context(
        server=str(raw["server"]) if "server" in raw else None,
        token=str(raw["token"]) if "token" in raw else None,
        token_file=Path(str(token_file)).expanduser() if token_file else None,
    )


def read_config(path: Path) -> CliConfig:
    """The config file at `path` (empty when there is none)."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return CliConfig()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SettingsError(f"config file {path} is not valid TOML: {e}") from e
    except OSError as e:
        raise SettingsError(f"cannot read the config file {path}: {e.strerror or e}") from e
    if "contexts" not in raw and ("server" in raw or "token" in raw):  # an earlier version's
        legacy = {k: v for k, v in raw.items() if k in ("server", "token")}
        return CliConfig({DEFAULT_CONTEXT: _context(DEFAULT_CONTEXT, legacy, path)},
                         DEFAULT_CONTEXT)  # fmt: skip
    contexts = raw.get("contexts", {})
    if not isinstance(contexts, dict):
        raise SettingsError(f"config file {path}: contexts is not a table")
    current = raw.get("current-context")
    return CliConfig({name: _context(name, value, path) for name, value in contexts.items()},
                     str(current) if current else None)  # fmt: skip


def _toml_string(value: str) -> str:
    escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}"
                      for c in value)  # fmt: skip
    return f'"{escaped}"'


def write_config(path: Path, config: CliConfig) -> None:
    """Write `config` to `path` (mode 0600, atomically)."""
    lines = []
    if config.current is not None:
        lines += [f"current-context = {_toml_string(config.current)}", ""]
    for name, context in sorted(config.contexts.items()):
        lines.append(f"[contexts.{_toml_string(name)}]")
        if context.server is not None:
            lines.append(f"server = {_toml_string(context.server)}")
        if context.token is not None:
            lines.append(f"token = {_toml_string(context.token)}")
        if context.token_file is not None:
            lines.append(f"token-file = {_toml_string(str(context.token_file))}")
        lines.append("")
    write_atomically(path, "\n".join(lines).encode(), mode=0o600)


@dataclass
class CliContext:
    server: str | None
    token: str | None
    config_path: Path
    context_name: str | None = None  # --context / EDGEFLEET_CONTEXT

    def selected_context(self) -> tuple[str | None, Context]:
        """The context this command uses: --context, else the config file's current one."""
        config = read_config(self.config_path)
        name = self.context_name or config.current
        if name is None:
            return None, Context()
        return name, config.context(name)

    def resolved(self) -> tuple[str, str | None]:
        _, context = self.selected_context()
        server = self.server or context.server
        if not server:
            raise SettingsError("no server given: use --server URL, EDGEFLEET_SERVER, "
                                "`edgefleet login` or `edgefleet config use-context`")  # fmt: skip
        token = self.token
        # The context's token goes only to the context's server, never to another one given
        # with --server or EDGEFLEET_SERVER.
        if token is None and server == context.server:
            token = context.read_token()
        return server, token

    def client(self) -> FleetClient:
        server, token = self.resolved()
        return FleetClient(server, token)
