"""Every command's common mistakes, run through the real `edgefleet` command: each ends in
one line on stderr (`error: ...`), the documented exit status, and never a traceback.

Missing extras are simulated by a directory on PYTHONPATH holding a module of the same name
that fails to import as a missing one does, so the child process meets exactly the
`ModuleNotFoundError` an install without that extra raises.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgefleet.localfleet import ServerProcess
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN

USAGE = 2  # click's and argparse's status for a usage error
FAILED = 1


@dataclass(frozen=True)
class Places:
    """What a case may point at: a server, a port taken, files and directories."""

    server_url: str
    busy_port: int
    tmp: Path

    @property
    def a_file(self) -> Path:
        return self.file("a-file", "")

    def file(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def without(self, *modules: str) -> str:
        """A PYTHONPATH on which importing each of `modules` fails as if not installed."""
        shadow = self.tmp / ("without-" + "-".join(modules))
        shadow.mkdir(exist_ok=True)
        for module in modules:
            (shadow / f"{module}.py").write_text(
                f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
            )
        return str(shadow)


@dataclass(frozen=True)
class Mistake:
    id: str
    args: Callable[[Places], list[str]]
    status: int
    says: tuple[str, ...]
    env: Callable[[Places], dict[str, str]] = field(default=lambda _: {})


def _server_env(places: Places) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": places.server_url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


MISTAKES = [
    # The control plane's start-up.
    Mistake("server: no data dir", lambda p: ["server"], USAGE, ("'--data-dir'", "required")),
    Mistake("server: port not a number",
            lambda p: ["server", "--data-dir", str(p.tmp / "s1"), "--port", "http"],
            USAGE, ("'--port'",)),
    Mistake("server: port out of range",
            lambda p: ["server", "--data-dir", str(p.tmp / "s1"), "--port", "70000"],
            FAILED, ("bad setting port", "EDGEFLEET_PORT")),
    Mistake("server: port in use",
            lambda p: ["server", "--data-dir", str(p.tmp / "s2"), "--port", str(p.busy_port)],
            FAILED, ("cannot listen on 127.0.0.1:", "Address already in use")),
    Mistake("server: unknown log level",
            lambda p: ["server", "--data-dir", str(p.tmp / "s3"), "--log-level", "verbose"],
            FAILED, ("bad setting log_level", "unknown log level 'verbose'")),
    Mistake("server: data dir under a file",
            lambda p: ["server", "--data-dir", str(p.a_file / "data")],
            FAILED, ("is not usable", "Not a directory")),
    Mistake("server: short admin token", lambda p: ["server", "--data-dir", str(p.tmp / "s4")],
            FAILED, ("bad setting admin_token (env EDGEFLEET_ADMIN_TOKEN)",
                     "at least 16 characters"),
            env=lambda p: {"EDGEFLEET_ADMIN_TOKEN": "short"}),
    Mistake("server: heartbeat interval out of range",
            lambda p: ["server", "--data-dir", str(p.tmp / "s6"), "--heartbeat-interval", "0"],
            FAILED, ("(flag --heartbeat-interval or env EDGEFLEET_HEARTBEAT_INTERVAL_S)",)),
    Mistake("server: install without the server extra",
            lambda p: ["server", "--data-dir", str(p.tmp / "s5")],
            FAILED, ("'uvicorn'", "pip install 'edgefleet[server]'"),
            env=lambda p: {"PYTHONPATH": p.without("uvicorn")}),
    Mistake("server bootstrap-token: not a data dir",
            lambda p: ["server", "bootstrap-token", "--data-dir", str(p.tmp / "nothing")],
            FAILED, ("no control plane database",)),
    Mistake("server bootstrap-token: bad lifetime",
            lambda p: ["server", "bootstrap-token", "--data-dir", str(p.tmp), "--expires", "soon"],
            FAILED, ("invalid duration",)),
    # The agent's start-up.
    Mistake("agent: unknown log level",
            lambda p: ["agent", "--server", p.server_url, "--data-dir", str(p.tmp / "a1"),
                       "--log-level", "verbose"],
            USAGE, ("--log-level", "unknown log level 'verbose'", "edgefleet agent --help")),
    Mistake("agent: interval not a number",
            lambda p: ["agent", "--server", p.server_url, "--data-dir", str(p.tmp / "a1"),
                       "--heartbeat-interval", "often"],
            USAGE, ("--heartbeat-interval", "often")),
    Mistake("agent: no server", lambda p: ["agent", "--data-dir", str(p.tmp / "a1")],
            USAGE, ("--server",)),
    Mistake("agent: data dir under a file",
            lambda p: ["agent", "--server", p.server_url, "--data-dir", str(p.a_file / "d")],
            FAILED, ("data dir", "is not usable", "Not a directory")),
    # Operator commands.
    Mistake("unknown option", lambda p: ["devices", "list", "--colour"], USAGE,
            ("No such option: --colour", "edgefleet devices list --help")),
    Mistake("bad option value", lambda p: ["devices", "list", "-o", "xml"], USAGE, ("xml",)),
    Mistake("no server anywhere", lambda p: ["devices", "list"], FAILED, ("no server given",),
            env=lambda p: {"EDGEFLEET_CONFIG": str(p.tmp / "no-config.toml")}),
    Mistake("server not reachable", lambda p: ["devices", "list"], FAILED, ("cannot reach",),
            env=lambda p: {"EDGEFLEET_SERVER": "http://127.0.0.1:9", "EDGEFLEET_TOKEN": "x"}),
    Mistake("bad token", lambda p: ["whoami"], FAILED, ("invalid API token",),
            env=lambda p: {"EDGEFLEET_SERVER": p.server_url, "EDGEFLEET_TOKEN": "wrong-token"}),
    Mistake("login with a bad token",
            lambda p: ["--config", str(p.tmp / "login.toml"), "login", "--server", p.server_url,
                       "--token", "wrong-token"],
            FAILED, ("invalid API token",)),
    Mistake("config file not TOML", lambda p: ["devices", "list"], FAILED, ("not valid TOML",),
            env=lambda p: {"EDGEFLEET_CONFIG": str(p.file("config.toml", "server = ["))}),
    Mistake("unknown context", lambda p: ["config", "use-context", "prod"], FAILED,
            ("no context 'prod'",),
            env=lambda p: {"EDGEFLEET_CONFIG": str(p.tmp / "no-config.toml")}),
    Mistake("unreadable token file",
            lambda p: ["config", "set-context", "lab", "--token-file", str(p.tmp / "missing")],
            FAILED, ("cannot read the token file",),
            env=lambda p: {"EDGEFLEET_CONFIG": str(p.tmp / "contexts.toml")}),
    Mistake("manifest is a directory", lambda p: ["apply", "-f", str(p.tmp)], FAILED,
            ("cannot read",), env=_server_env),
    Mistake("artifact file missing",
            lambda p: ["artifacts", "push", str(p.tmp / "missing.onnx"), "--name", "m",
                       "--version", "1.0.0"],
            FAILED, ("is not a file",), env=_server_env),
    Mistake("bad duration", lambda p: ["enrollment-tokens", "create", "--expires", "5 parsecs"],
            FAILED, ("invalid duration",), env=_server_env),
    Mistake("completion for an unknown shell", lambda p: ["completion", "tcsh"], USAGE,
            ("'tcsh' is not one of",)),
    Mistake("sim profile missing", lambda p: ["sim", "profiles", str(p.tmp / "nope.yaml")],
            FAILED, ("no profile file",)),
    Mistake("sim profiles without numpy", lambda p: ["sim", "profiles"], FAILED,
            ("'numpy'", "pip install 'edgefleet["),
            env=lambda p: {"PYTHONPATH": p.without("numpy")}),
]  # fmt: skip


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def assert_one_line(result: CliResult, status: int, says: tuple[str, ...]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.code == status, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in says:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_a_mistake_ends_in_one_line_and_a_non_zero_status(
    mistake: Mistake, server: ServerProcess, busy_port: int, tmp_path: Path
) -> None:
    places = Places(server.url, busy_port, tmp_path)
    result = run_cli(*mistake.args(places), env=mistake.env(places), timeout_s=60)
    assert_one_line(result, mistake.status, mistake.says)
