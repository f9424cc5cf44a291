"""`edgefleet agent`: run the device agent in a lean process of its own.

The command replaces this process (same process id, same arguments) with
`python -OO -m edgefleet.agent` (edgefleet.launcher.exec_agent), so the long-running agent
does not carry the operator CLI. Its flags and `--help` live in edgefleet.agent.command. An
enrollment token given with --enroll-token is handed over in the environment instead, off
the new process's command line.
"""

from __future__ import annotations

import typer

from edgefleet.launcher import exec_agent

__all__ = ["agent"]

# Everything after `agent` goes to the agent's own parser, --help included.
CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True,
                    "help_option_names": []}  # fmt: skip


def agent(ctx: typer.Context) -> None:
    """Run the device agent: enroll, heartbeat, follow the desired state. Its flags:
    `edgefleet agent --help`; its systemd unit: `edgefleet agent install-service --help`."""
    exec_agent(ctx.args)
