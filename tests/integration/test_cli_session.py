"""The CLI's session: admin access at the server's start and its recovery on the server's
machine, `version`, shell completion, and contexts that switch between control planes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from edgefleet import __version__
from edgefleet.localfleet import ServerProcess
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN

NO_ADMIN = "nobody can administer this control plane"
IGNORED = "EDGEFLEET_ADMIN_TOKEN is ignored"


def _lines(server: ServerProcess, text: str) -> list[str]:
    return [line for line in server.log().splitlines() if text in line]


def _started_without_admin_token(data_dir: Path) -> ServerProcess:
    server = ServerProcess(data_dir, admin_token="")
    del server.env["EDGEFLEET_ADMIN_TOKEN"]
    server.start()
    return server


def _ok(result: CliResult) -> CliResult:
    assert result.code == 0, result.stderr
    return result


def test_a_server_without_admin_says_so_and_a_local_bootstrap_token_gets_admin_back(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "server"
    server = _started_without_admin_token(data_dir)
    try:
        [line] = _lines(server, NO_ADMIN)
        assert "level=warning" in line and 'reason="no admin token"' in line
        assert f"edgefleet server bootstrap-token --data-dir {data_dir}" in line

        minted = _ok(run_cli("server", "bootstrap-token", "--data-dir", str(data_dir)))
        token = minted.stdout.strip()
        assert token.startswith("efa_") and "shown only once" in minted.stderr
        as_minted = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": token}
        who = _ok(run_cli("whoami", env=as_minted))
        assert "local-bootstrap" in who.stdout and "role admin" in who.stdout
        _ok(run_cli("tokens", "create", "ci", "--role", "operator", env=as_minted))
        audit = _ok(run_cli("audit", "list", "-o", "json", env=as_minted)).json()
        [bootstrap] = [r for r in audit if r["action"] == "api-token.create"
                       and r["actor"] == "local-bootstrap"]  # fmt: skip
        assert bootstrap["details"]["via"] == "local bootstrap"
        _ok(run_cli("audit", "verify", env=as_minted))  # the chain took the local record

        server.stop()
        server.env["EDGEFLEET_ADMIN_TOKEN"] = "a-new-admin-token-nobody-stored"
        server.start()
        [line] = _lines(server, IGNORED)
        assert "level=warning" in line and "bootstrap-token" in line
        refused = run_cli("whoami", env={**as_minted, "EDGEFLEET_TOKEN": server.env[
            "EDGEFLEET_ADMIN_TOKEN"]})  # fmt: skip
        assert refused.code == 1 and "invalid API token" in refused.stderr
        assert len(_lines(server, NO_ADMIN)) == 1  # there is an admin now: said once only
    finally:
        server.stop()


def test_the_admin_token_is_created_once_then_recognised(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", ADMIN_TOKEN)
    server.start()
    try:
        assert len(_lines(server, "created the admin token")) == 1
        server.stop()
        server.start()
        assert len(_lines(server, "is an admin token of this data dir")) == 1
        assert not _lines(server, IGNORED) and not _lines(server, NO_ADMIN)
    finally:
        server.stop()


def test_bootstrap_token_json_and_lifetime(server: ServerProcess) -> None:
    minted = _ok(run_cli("server", "bootstrap-token", "--data-dir", str(server.data_dir),
                         "--name", "rescue", "--expires", "1h", "-o", "json")).json()  # fmt: skip
    assert minted["role"] == "admin" and minted["name"] == "rescue"
    assert minted["expires_at"].endswith("Z")
    env = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": minted["token"]}
    assert "rescue" in _ok(run_cli("whoami", env=env)).stdout


def test_version_with_and_without_a_server(server: ServerProcess, tmp_path: Path) -> None:
    online = _ok(run_cli("version", env={"EDGEFLEET_SERVER": server.url}))
    assert f"client  {__version__}" in online.stdout
    assert f"server  {__version__} ({server.url})" in online.stdout
    as_json = _ok(run_cli("version", "-o", "json", env={"EDGEFLEET_SERVER": server.url})).json()
    assert as_json == {"client": __version__, "server": __version__,
                       "server_url": server.url, "server_error": None}  # fmt: skip

    offline = _ok(run_cli("version", env={"EDGEFLEET_SERVER": "http://127.0.0.1:9"}))
    assert f"client  {__version__}" in offline.stdout
    assert "server  unknown: cannot reach http://127.0.0.1:9" in offline.stdout
    nowhere = _ok(run_cli("version", env={"EDGEFLEET_CONFIG": str(tmp_path / "none.toml")}))
    assert "server  unknown: no server given" in nowhere.stdout
    assert _ok(run_cli("--version")).stdout.strip() == f"edgefleet {__version__}"


def test_completion_scripts_complete_commands_in_a_real_shell(tmp_path: Path) -> None:
    script = _ok(run_cli("completion", "bash")).stdout
    (tmp_path / "edgefleet.bash").write_text(script)
    bin_dir = tmp_path / "bin"  # `edgefleet` as the shell finds it, running this checkout
    bin_dir.mkdir()
    launcher = bin_dir / "edgefleet"
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} -m edgefleet.cli "$@"\n')
    launcher.chmod(0o755)

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        done = subprocess.run(
            ["bash", "-c", f"source {tmp_path}/edgefleet.bash; COMP_WORDS=({line}); "
             f"COMP_CWORD={len(words) - 1}; _edgefleet_completion edgefleet; "
             'printf "%s\\n" "${COMPREPLY[@]}"'],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("edgefleet", "conf") == ["config"]
    assert complete("edgefleet", "config", "use") == ["use-context"]
    assert "--data-dir" in complete("edgefleet", "server", "bootstrap-token", "--")
    assert "#compdef edgefleet" in _ok(run_cli("completion", "zsh")).stdout
    assert "complete --command edgefleet" in _ok(run_cli("completion", "fish")).stdout


def test_contexts_switch_between_control_planes(server: ServerProcess, tmp_path: Path) -> None:
    other = ServerProcess(tmp_path / "other", "other-admin-token-0123456789")
    other.start()
    try:
        with other.client() as client:
            viewer = client.create_api_token("viewer-on-other", "viewer", None)["token"]
        token_file = tmp_path / "other.token"
        token_file.write_text(viewer + "\n")
        config = tmp_path / "cfg" / "config.toml"
        env = {"EDGEFLEET_CONFIG": str(config)}

        _ok(run_cli("config", "set-context", "main", "--server", server.url, "--token",
                    ADMIN_TOKEN, env=env))  # fmt: skip
        _ok(run_cli("config", "set-context", "other", "--server", other.url, "--token-file",
                    str(token_file), env=env))  # fmt: skip
        assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
        assert "bootstrap-admin" in _ok(run_cli("whoami", env=env)).stdout  # first is current
        _ok(run_cli("config", "use-context", "other", env=env))
        assert "viewer-on-other" in _ok(run_cli("whoami", env=env)).stdout
        assert _ok(run_cli("config", "current-context", env=env)).stdout.strip() == "other"
        assert "bootstrap-admin" in _ok(run_cli("--context", "main", "whoami", env=env)).stdout
        assert (
            "bootstrap-admin"
            in _ok(run_cli("whoami", env={**env, "EDGEFLEET_CONTEXT": "main"})).stdout
        )

        listed = _ok(run_cli("config", "get-contexts", "-o", "json", env=env))
        assert ADMIN_TOKEN not in listed.stdout and viewer not in listed.stdout
        assert [(c["name"], c["current"], c["server"]) for c in listed.json()] == [
            ("main", False, server.url), ("other", True, other.url)]  # fmt: skip

        # The current context's token never goes to another server named on the command line.
        elsewhere = run_cli("whoami", env={**env, "EDGEFLEET_SERVER": server.url})
        assert elsewhere.code == 1 and "missing API token" in elsewhere.stderr

        _ok(run_cli("config", "delete-context", "other", env=env))
        gone = run_cli("whoami", env=env)
        assert gone.code == 1 and "no server given" in gone.stderr
    finally:
        other.stop()


def test_login_honours_edgefleet_server_and_reads_an_earlier_config(
    server: ServerProcess, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    env = {"EDGEFLEET_CONFIG": str(config), "EDGEFLEET_SERVER": server.url}
    login = _ok(run_cli("login", "--token", ADMIN_TOKEN, env=env))
    assert f"logged in to {server.url}" in login.stdout and "context default" in login.stdout
    contexts = _ok(run_cli("config", "get-contexts", "-o", "json",
                           env={"EDGEFLEET_CONFIG": str(config)})).json()  # fmt: skip
    assert [(c["name"], c["current"], c["server"]) for c in contexts] == [
        ("default", True, server.url)]  # fmt: skip

    earlier = tmp_path / "earlier.toml"  # as `login` of an earlier version wrote it
    earlier.write_text(f'server = "{server.url}"\ntoken = "{ADMIN_TOKEN}"\n')
    env = {"EDGEFLEET_CONFIG": str(earlier)}
    assert "bootstrap-admin" in _ok(run_cli("whoami", env=env)).stdout
    _ok(run_cli("config", "set-context", "lab", "--server", "http://127.0.0.1:9", env=env))
    assert "bootstrap-admin" in _ok(run_cli("whoami", env=env)).stdout  # default stays current
    assert json.loads(run_cli("config", "get-contexts", "-o", "json", env=env).stdout)[0][
        "name"] == "default"  # fmt: skip


def test_login_off_a_terminal_without_a_token_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgefleet.cli", "login", "--server", "http://127.0.0.1:9"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")},
             "EDGEFLEET_CONFIG": str(tmp_path / "config.toml")},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == ("error: login needs --token (or EDGEFLEET_TOKEN) when its input is "
                           "not a terminal (bad_setting)\n")  # fmt: skip
