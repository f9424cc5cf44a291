"""`--help` as operators read it at 80 columns: every command's parameters are named by words
(`DEVICE`, `FILE`, `N`), never by a type (`<str>`, `<list[str]>`, `<int>`), no option name
is cut, and the agent's and the control plane's help point to their systemd units."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from typer.main import get_command

from edgefleet.cli.main import app, run
from tests.cli_runner import run_cli

TYPE_COLUMNS = ("<str>", "<list[", "<int>", "<float>", "<path>", "<bool>")
# An option name rich cut short to fit the table: `--controller-interv…`.
CUT_OPTION = re.compile(r"--[\w-]*…")


def command_paths() -> Iterator[list[str]]:
    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, subcommand in sorted(getattr(command, "commands", {}).items()):
            yield from walk(subcommand, [*path, name])

    # `agent` hands its arguments to the agent's own parser (checked below).
    return (path for path in walk(get_command(app), []) if path != ["agent"])


def help_of(path: list[str], monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> str:  # fmt: skip
    monkeypatch.setattr("sys.argv", ["edgefleet", *path, "--help"])
    with pytest.raises(SystemExit) as ended:
        run()
    out = capsys.readouterr().out
    assert ended.value.code == 0, (path, out)
    return out


def test_no_help_shows_a_type_or_cuts_an_option_name_at_80_columns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    paths = list(command_paths())
    assert len(paths) > 100
    for path in paths:
        shown = help_of(path, monkeypatch, capsys)
        command = " ".join(["edgefleet", *path])
        assert "Usage: " in shown, command
        for type_column in TYPE_COLUMNS:
            assert type_column not in shown, f"{command} --help shows {type_column}"
        assert not CUT_OPTION.search(shown), f"{command} --help cuts an option name"


def test_arguments_and_bounds_read_as_words(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    label = help_of(["devices", "label"], monkeypatch, capsys)
    assert re.search(r"\*\s+DEVICE\s+\[required\]", label)
    server = help_of(["server"], monkeypatch, capsys)
    assert re.search(r"--port\s+N\s", server) and re.search(r"--data-dir\s+DIR\s", server)
    simulation = help_of(["sim", "run"], monkeypatch, capsys)
    assert re.search(r"--devices\s+-n\s+N\s+Virtual devices \[x>=1\]", simulation)


@pytest.mark.parametrize("role", ["agent", "server"])
def test_the_help_of_agent_and_server_names_install_service(role: str) -> None:
    shown = run_cli(role, "--help", env={"COLUMNS": "80"})
    assert shown.code == 0, shown.stderr
    assert f"`edgefleet {role} install-service`" in shown.stdout
    unit = run_cli(role, "install-service", "--help")
    assert unit.code == 0 and f"usage: edgefleet {role} install-service" in unit.stdout
