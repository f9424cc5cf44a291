"""Entry point of the `edgefleet` command.

Errors from the error tree end the command with a one-line message on stderr and exit
status 1 (2 for usage errors, as click does); tracebacks are never shown.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.markup import escape
from typer.main import get_command

from edgefleet import __version__
from edgefleet.cli import (
    audit,
    bench,
    config,
    ddi,
    delta,
    devices,
    lab,
    policy,
    releases,
    rollouts,
    server,
    sim,
    telemetry,
    tokens,
    training,
    trust,
    workloads,
)
from edgefleet.cli.agent import CONTEXT_SETTINGS as AGENT_CONTEXT_SETTINGS
from edgefleet.cli.agent import agent
from edgefleet.cli.apply import apply, diff
from edgefleet.cli.context import (
    DEFAULT_CONTEXT,
    CliContext,
    Context,
    default_config_path,
    read_config,
    write_config,
)
from edgefleet.cli.help_text import use_word_metavars
from edgefleet.cli.output import Output, console, error_console, print_error, print_json
from edgefleet.client import FleetClient
from edgefleet.errors import EdgefleetError, SettingsError
from edgefleet.extras import missing_dependency

app = typer.Typer(
    name="edgefleet",
    help="Edge orchestration for fleets of devices serving ML models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
VERSION_TIMEOUT_S = 5.0
# The variable under which the shell asks the command for completions (click's convention).
COMPLETE_VAR = "_EDGEFLEET_COMPLETE"


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
    context: str = typer.Option(
        None, "--context", envvar="EDGEFLEET_CONTEXT", help="Context of the config file to use"
    ),
    config: Path = typer.Option(
        None, "--config", envvar="EDGEFLEET_CONFIG", help="Config file with the contexts"
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the CLI's version"
    ),
) -> None:
    """Operator commands read --server/--token, then EDGEFLEET_SERVER/EDGEFLEET_TOKEN,
    then the current context of the config file (`edgefleet login`, `edgefleet config`)."""
    ctx.obj = CliContext(server_url, token, config or default_config_path(), context)


@app.command()
def login(
    ctx: typer.Context,
    server_url: str = typer.Option(
        None, "--server", envvar="EDGEFLEET_SERVER", help="Control plane URL [the context's]"
    ),
    token: str = typer.Option(
        None, "--token", envvar="EDGEFLEET_TOKEN", help="API token [asked for on a terminal]"
    ),
    context: str = typer.Option(
        None, "--context", help="Context to save them in [the current one, else default]"
    ),
) -> None:
    """Check a server and token, then save them as a context of the config file (mode
    0600) and make it the current one."""
    config = read_config(ctx.obj.config_path)
    name = context or ctx.obj.context_name or config.current or DEFAULT_CONTEXT
    url = server_url or ctx.obj.server or config.contexts.get(name, Context()).server
    if not url:
        raise SettingsError("login needs --server URL (or EDGEFLEET_SERVER)")
    if token is None:
        if not sys.stdin.isatty():
            raise SettingsError("login needs --token (or EDGEFLEET_TOKEN) when its input is "
                                "not a terminal")  # fmt: skip
        token = typer.prompt("Token", hide_input=True)
    with FleetClient(url, token) as client:
        who = client.whoami()
    write_config(ctx.obj.config_path, config.with_context(name, Context(url, token)).using(name))
    console.print(f"logged in to {url} as {who['name']} (role {who['role']})")
    console.print(f"saved to {ctx.obj.config_path} as context {name}")


@app.command()
def whoami(ctx: typer.Context) -> None:
    """Show which token and role the CLI is using."""
    with ctx.obj.client() as client:
        who = client.whoami()
    console.print(f"{who['name']} ({who['token_id']}), role {who['role']}")


@app.command()
def version(
    ctx: typer.Context,
    output: Output = typer.Option(Output.TABLE, "--output", "-o", help="table or json"),
) -> None:
    """Show the CLI's version and the control plane's (without a reachable server, says
    why)."""
    shown: dict[str, str | None] = {"client": __version__, "server": None,
                                    "server_url": None, "server_error": None}  # fmt: skip
    try:
        url, token = ctx.obj.resolved()
        shown["server_url"] = url
        with FleetClient(url, token, timeout_s=VERSION_TIMEOUT_S) as client:
            shown["server"] = str(client.health().get("version") or "unknown")
    except EdgefleetError as e:  # offline, or no server configured: the client's still shows
        shown["server_error"] = e.message
    if output is Output.JSON:
        print_json(shown)
        return
    console.print(f"client  {__version__}", highlight=False)
    if shown["server"] is not None:
        console.print(f"server  {shown['server']} ({shown['server_url']})", highlight=False)
    else:
        console.print(f"server  unknown: {shown['server_error']}", highlight=False)


class Shell(StrEnum):
    BASH = "bash"
    ZSH = "zsh"
    FISH = "fish"
    POWERSHELL = "powershell"


@app.command()
def completion(shell: Shell = typer.Argument(..., help="bash, zsh, fish or powershell")) -> None:
    """Print the shell completion script for SHELL.

    bash: `source <(edgefleet completion bash)` in ~/.bashrc
    zsh:  `edgefleet completion zsh > "${fpath[1]}/_edgefleet"`
    fish: `edgefleet completion fish > ~/.config/fish/completions/edgefleet.fish`
    """
    from typer.completion import get_completion_script

    typer.echo(get_completion_script(prog_name="edgefleet", complete_var=COMPLETE_VAR,
                                     shell=shell.value))  # fmt: skip


app.add_typer(server.app, name="server")
app.add_typer(config.app, name="config")
app.command(name="agent", context_settings=AGENT_CONTEXT_SETTINGS, add_help_option=False)(agent)
app.add_typer(devices.app, name="devices")
app.add_typer(ddi.app, name="ddi")
app.add_typer(devices.groups_app, name="groups")
app.add_typer(tokens.app, name="tokens")
app.add_typer(tokens.roles_app, name="roles")
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
app.command(name="diff")(diff)
app.add_typer(rollouts.app, name="rollouts")
app.add_typer(rollouts.trains_app, name="trains")
app.add_typer(training.app, name="training")
app.add_typer(workloads.workloads_app, name="workloads")
app.add_typer(workloads.placements_app, name="placements")
app.add_typer(policy.app, name="policy")
app.add_typer(policy.changes_app, name="changes")
app.add_typer(sim.app, name="sim")
app.add_typer(lab.app, name="lab")
app.add_typer(bench.app, name="bench")


def run() -> None:
    """The `edgefleet` command: every mistake ends in one line on stderr, never a traceback."""
    command = get_command(app)
    use_word_metavars(command)
    try:
        status = command(prog_name="edgefleet", standalone_mode=False)
    except typer.TyperException as e:  # click's usage errors (2) and file errors (1)
        sys.exit(_print_usage_error(e))
    except typer.Abort:
        print_error(EdgefleetError("aborted", code="aborted"))
        sys.exit(1)
    except EdgefleetError as e:
        print_error(e)
        sys.exit(1)
    except ModuleNotFoundError as e:
        missing = missing_dependency(e, "this command", prefer="cli")
        if missing is None:
            raise
        print_error(missing)
        sys.exit(1)
    except OSError as e:  # a file or directory the command was pointed at
        print_error(EdgefleetError(_describe_os_error(e), code="os_error"))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(status if isinstance(status, int) else 0)


def _print_usage_error(error: typer.TyperException) -> int:
    """One line naming the mistake and where help is; returns the exit status."""
    message = error.format_message()
    status = getattr(error, "exit_code", 2)
    if not message.strip() or "\n" in message:
        # No arguments: the command's help, which rich has printed already (else it is the
        # message).
        if message.strip():
            sys.stderr.write(message.rstrip("\n") + "\n")
        return status
    ctx = getattr(error, "ctx", None)
    where = f"; see {ctx.command_path} --help" if ctx is not None else ""
    error_console.print(
        f"[red]error:[/red] {escape(message)} [dim](usage{escape(where)})[/dim]",
        highlight=False,
    )
    return status


def _describe_os_error(error: OSError) -> str:
    """`cannot open /x: Permission denied` rather than `[Errno 13] Permission denied: '/x'`."""
    if error.filename is None:
        return error.strerror or str(error)
    return f"cannot use {error.filename}: {error.strerror or error}"
