"""The `edgefleet` command's entry point: it chooses between the operator CLI and the agent.

A device installs `edgefleet[agent]`, without the operator CLI's libraries (typer, rich,
httpx, numpy; `cli` extra), yet `edgefleet agent ...` must work there too. So this module
imports only the standard library until it knows what runs:

- `edgefleet agent|server install-service ...`: writes a systemd unit (edgefleet.service_unit),
  with or without the CLI installed;
- anything else, where typer is installed: the operator CLI (edgefleet.cli.main);
- `edgefleet agent ...` without the CLI: hands over to the lean agent process at once, as the
  CLI's `agent` command does;
- any other command without the CLI: one line saying what to install, exit status 1.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

NO_CLI = (
    "error: this install has the device agent only (`edgefleet agent ...`); the operator "
    "commands need the CLI: pip install 'edgefleet[cli]' (missing_dependency)"
)


def exec_agent(argv: Sequence[str]) -> NoReturn:
    """Replace this process (same process id) with `python -OO -m edgefleet.agent ARGV`, an
    enrollment token on the command line moved into its environment.

    The long-running agent then holds neither the operator CLI nor the modules' docstrings
    (-OO: about 0.7 MB; the agent relies on no assert and reads no docstring).
    """
    from edgefleet.agent.command import without_enroll_token

    sys.stdout.flush()
    sys.stderr.flush()
    args, env = without_enroll_token(argv, os.environ) or (list(argv), dict(os.environ))
    os.execve(sys.executable, [sys.executable, "-OO", "-m", "edgefleet.agent", *args], env)


def run() -> None:
    """`edgefleet ...`: see the module docstring for what runs."""
    argv = sys.argv[1:]
    if argv[1:2] == ["install-service"] and argv[0] in ("agent", "server"):
        from edgefleet.service_unit import main

        main("agent" if argv[0] == "agent" else "server", argv[2:])
        return
    if importlib.util.find_spec("typer") is not None:
        from edgefleet.cli.main import run as run_cli

        run_cli()
        return
    if argv[:1] == ["agent"]:
        exec_agent(argv[1:])
    print(NO_CLI, file=sys.stderr)
    sys.exit(1)
