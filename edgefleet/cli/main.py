"""Entry point of the `edgefleet` command.

Errors from the error tree end the command with a one-line message on stderr and exit
status 1 (2 for usage errors, as click does); tracebacks are never shown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from edgefleet import __version__
from edgefleet.cli import (
    audit,
    bench,
    delta,
    devices,
    lab,
    releases,
    rollouts,
    sim,
    telemetry,
    tokens,
    trust,
    workloads,
)
from edgefleet.cli.agent import CONTEXT_SETTINGS as AGENT_CONTEXT_SETTINGS
from edgefleet.cli.agent import agent
from edgefleet.cli.apply import apply
from edgefleet.cli.context import CliContext, default_config_path, write_config
from edgefleet.cli.output import console, error_console
from edgefleet.cli.server import server
from edgefleet.client import FleetClient
from edgefleet.errors import EdgefleetError

app = typer.Typer(
    name="edgefleet",
    help="Edge orchestration for fleets of devices serving ML models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgefleet {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    server_url: str = typer.Option(
        None, "--server", envvar="EDGEFLEET_SERVER", help="Control plane URL"
    ),
    token: str = typer.Option(None, "--token", envvar="EDGEFLEET_TOKEN", help="API token"),
    config: Path = typer.Option(
        None, "--config", envvar="EDGEFLEET_CONFIG", help="Config file with server and token"
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version"
    ),
) -> None:
    """Operator commands read --server/--token, then EDGEFLEET_SERVER/EDGEFLEET_TOKEN,
    then the config file written by `edgefleet login`."""
    ctx.obj = CliContext(server_url, token, config or default_config_path())


@app.command()
def login(
    ctx: typer.Context,
    server_url: str = typer.Option(..., "--server", help="Control plane URL"),
    token: str = typer.Option(..., "--token", help="API token", prompt=True, hide_input=True),
) -> None:
    """Check a server and token, then save them in the config file (mode 0600)."""
    with FleetClient(server_url, token) as client:
        who = client.whoami()
    write_config(ctx.obj.config_path, server_url, token)
    console.print(f"logged in to {server_url} as {who['name']} (role {who['role']})")
    console.print(f"saved to {ctx.obj.config_path}")


@app.command()
def whoami(ctx: typer.Context) -> None:
    """Show which token and role the CLI is using."""
    with ctx.obj.client() as client:
        who = client.whoami()
    console.print(f"{who['name']} ({who['token_id']}), role {who['role']}")


app.command(name="server")(server)
app.command(name="agent", context_settings=AGENT_CONTEXT_SETTINGS, add_help_option=False)(agent)
app.add_typer(devices.app, name="devices")
app.add_typer(devices.groups_app, name="groups")
app.add_typer(tokens.app, name="tokens")
app.add_typer(tokens.enrollment_app, name="enrollment-tokens")
app.add_typer(audit.app, name="audit")
app.add_typer(releases.artifacts_app, name="artifacts")
app.add_typer(releases.releases_app, name="releases")
app.add_typer(trust.keys_app, name="keys")
app.add_typer(trust.trust_app, name="trust")
app.add_typer(delta.app, name="delta")
app.add_typer(telemetry.app, name="telemetry")
app.add_typer(telemetry.alerts_app, name="alerts")
app.command(name="apply")(apply)
app.add_typer(rollouts.app, name="rollouts")
app.add_typer(rollouts.trains_app, name="trains")
app.add_typer(workloads.workloads_app, name="workloads")
app.add_typer(workloads.placements_app, name="placements")
app.add_typer(sim.app, name="sim")
app.add_typer(lab.app, name="lab")
app.add_typer(bench.app, name="bench")


def run() -> None:
    try:
        app()
    except EdgefleetError as e:
        # The message may quote what the server stored or was sent: text, never markup.
        error_console.print(
            f"[red]error:[/red] {escape(e.message)} [dim]({escape(e.code)})[/dim]",
            highlight=False,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
