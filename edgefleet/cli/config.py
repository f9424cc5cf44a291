"""`edgefleet config ...`: the named contexts of the CLI's config file (kubectl-like), each a
control plane and the token to use there."""

from __future__ import annotations

from pathlib import Path

import typer

from edgefleet.cli.context import Context, read_config, write_config
from edgefleet.cli.output import Column, Output, console, emit_list
from edgefleet.errors import SettingsError

app = typer.Typer(help="Contexts: which control plane and token the CLI uses.",
                  no_args_is_help=True)  # fmt: skip

CONTEXT_COLUMNS = [
    Column("CURRENT", lambda c: "*" if c["current"] else ""),
    Column("NAME", lambda c: c["name"], "cyan"),
    Column("SERVER", lambda c: c["server"] or "-"),
    Column("TOKEN", lambda c: c["token_file"] or ("set" if c["token"] else "-")),
]


@app.command("get-contexts")
def get_contexts(
    ctx: typer.Context,
    output: Output = typer.Option(Output.TABLE, "--output", "-o", help="table or json"),
) -> None:
    """List the contexts; * marks the current one. Tokens are not shown."""
    config = read_config(ctx.obj.config_path)
    rows = [
        {"name": name, "current": name == config.current, "server": context.server,
         "token": context.token is not None,
         "token_file": str(context.token_file) if context.token_file else None}
        for name, context in sorted(config.contexts.items())
    ]  # fmt: skip
    emit_list(rows, output, CONTEXT_COLUMNS)


@app.command("current-context")
def current_context(ctx: typer.Context) -> None:
    """Print the current context's name."""
    config = read_config(ctx.obj.config_path)
    if config.current is None:
        raise SettingsError("no current context: `edgefleet config use-context NAME`")
    typer.echo(config.current)


@app.command("use-context")
def use_context(ctx: typer.Context, name: str = typer.Argument(..., help="Context name")) -> None:
    """Make NAME the current context."""
    config = read_config(ctx.obj.config_path)
    context = config.context(name)
    write_config(ctx.obj.config_path, config.using(name))
    console.print(f"using context {name} ({context.server or 'no server'})", highlight=False)


@app.command("set-context")
def set_context(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Context name (created if new)"),
    server: str = typer.Option(None, "--server", help="Control plane URL"),
    token: str = typer.Option(None, "--token", help="API token, stored in the config file"),
    token_file: Path = typer.Option(
        None, "--token-file", help="File holding the API token, read at each use"
    ),
    use: bool = typer.Option(False, "--use", help="Also make it the current context"),
) -> None:
    """Create a context or change what it says; the options given replace their values.

    A token and a token file exclude each other: giving one drops the other."""
    if token is not None and token_file is not None:
        raise typer.BadParameter("give --token or --token-file, not both",
                                 param_hint="'--token'")  # fmt: skip
    config = read_config(ctx.obj.config_path)
    context = config.contexts.get(name, Context())
    if server is not None:
        context = Context(server, context.token, context.token_file)
    if token is not None:
        context = Context(context.server, token, None)
    if token_file is not None:
        token_file = token_file.expanduser().absolute()
        Context(token_file=token_file).read_token()  # readable now, or one line saying why
        context = Context(context.server, None, token_file)
    updated = config.with_context(name, context)
    if use or updated.current is None:
        updated = updated.using(name)
    write_config(ctx.obj.config_path, updated)
    now = " (current)" if updated.current == name else ""
    console.print(f"context {name}{now} saved to {ctx.obj.config_path}", highlight=False)


@app.command("delete-context")
def delete_context(
    ctx: typer.Context, name: str = typer.Argument(..., help="Context name")
) -> None:
    """Remove a context (when it was the current one, none is current afterwards)."""
    config = read_config(ctx.obj.config_path)
    write_config(ctx.obj.config_path, config.without_context(name))
    console.print(f"context {name} deleted", highlight=False)
