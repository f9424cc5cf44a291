"""The command lines in README.md and docs/*.md name commands and flags that exist: each
`edgefleet ...` line of a shell block is walked down the CLI's command tree, and every flag
on it must be one its command (or the top-level command) takes, as `--help` lists them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.main import get_command

from edgefleet.agent.command import build_parser
from edgefleet.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Written by the launcher before the CLI starts (edgefleet/launcher.py), not typer commands.
OUTSIDE_THE_CLI = {("agent", "install-service"), ("server", "install-service")}
_FLAG = re.compile(r"^-{1,2}[A-Za-z][A-Za-z0-9-]*")


def _command_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, command line) of each `edgefleet ...` line in the file's sh blocks,
    continuation lines joined."""
    in_shell, pending, start = False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_shell = line.strip() in ("```sh", "```bash", "```console") and not in_shell
            continue
        if not in_shell:
            continue
        text = line.split(" #", 1)[0].rstrip()
        if pending:
            pending += " " + text.rstrip("\\").strip()
        elif re.match(r"^(\.venv/bin/)?edgefleet ", text.strip()):
            pending, start = text.strip().rstrip("\\"), number
        if pending and not text.endswith("\\"):
            yield start, pending
            pending = ""


CASES = [(f"{path.relative_to(ROOT)}:{number}", line)
         for path in DOCUMENTS for number, line in _command_lines(path)]  # fmt: skip


def _takes_value(command: object, word: str) -> bool:
    """Whether `word` is an option of `command` whose value is the next word."""
    for param in getattr(command, "params", []):
        if word in getattr(param, "opts", []):
            return not getattr(param, "is_flag", False)
    return False


def _options(command: object) -> set[str]:
    names: set[str] = set()
    for param in getattr(command, "params", []):
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names | {"--help"}


@pytest.fixture(scope="module")
def root() -> object:
    """The CLI's command tree, built once: each case only reads it."""
    return get_command(app)


@pytest.mark.parametrize(("where", "line"), CASES, ids=[c[0] for c in CASES])
def test_documented_commands_and_flags_exist(root: object, where: str, line: str) -> None:
    words = [w.strip("[]()") for w in line.split()[1:]]
    # `A | B ...` lists alternatives (the first one's line is checked); the shell's own
    # words end the command.
    ends = [i for i, w in enumerate(words) if w in ("|", "&", "&&", ";", ">", "<", "...")]
    words = [w for w in words[: min(ends, default=len(words))] if w]
    if tuple(w for w in words if not w.startswith("-"))[:2] in OUTSIDE_THE_CLI:
        return
    allowed = _options(root)
    command: object = root
    path: list[str] = []
    takes_value = False
    for word in words:
        if takes_value or word.startswith("-"):
            takes_value = not takes_value and _takes_value(command, word)
            continue
        commands = getattr(command, "commands", None)
        if commands is None:
            break
        name = word.split("|")[0]
        assert name in commands, f"{where}: {line!r}: no command {name!r}"
        command = commands[name]
        path.append(name)
    if path == ["agent"]:
        allowed |= {opt for action in build_parser()._actions for opt in action.option_strings}
    else:
        allowed |= _options(command)
    for word in words:
        flag = _FLAG.match(word.strip("[]()'\""))
        if flag and flag.group() not in allowed:
            pytest.fail(f"{where}: `edgefleet {' '.join(path)}` has no option {flag.group()} "
                        f"(line: {line!r})")  # fmt: skip


def test_the_tour_of_the_readme_is_checked() -> None:
    assert sum(where.startswith("README.md") for where, _ in CASES) > 50
