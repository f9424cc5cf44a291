"""`edgefleet agent`: run the device agent in a lean process of its own.

The command replaces this process (same process id, same arguments) with
`python -OO -m edgefleet.agent`, so the long-running agent does not carry the operator CLI
(nor its own docstrings: -OO keeps about 0.7 MB of them out of the idle agent; the agent
relies on no assert and reads no docstring). Its flags and `--help` live in
edgefleet.agent.command. An enrollment token given with --enroll-token is handed over in
the environment instead, off the new process's command line.
"""

from __future__ import annotations

import os
import sys

import typer

from edgefleet.agent.command import FAULT_ENV, HEARTBEAT_LOSS_ENV, without_enroll_token

__all__ = ["FAULT_ENV", "HEARTBEAT_LOSS_ENV", "agent"]

# Everything after `agent` goes to the agent's own parser, --help included.
CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True,
                    "help_option_names": []}  # fmt: skip


def agent(ctx: typer.Context) -> None:
    """Run the device agent: enroll, heartbeat, follow the desired state. Its flags:
    `edgefleet agent --help`."""
    sys.stdout.flush()
    sys.stderr.flush()
    args, env = without_enroll_token(ctx.args, os.environ) or (ctx.args, dict(os.environ))
    os.execve(sys.executable, [sys.executable, "-OO", "-m", "edgefleet.agent", *args], env)
