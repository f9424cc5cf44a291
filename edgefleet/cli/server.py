"""`edgefleet server`: run the control plane; `edgefleet server bootstrap-token`: mint an
admin API token in its database, on its machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from edgefleet.cli.output import Output, print_json
from edgefleet.errors import SettingsError
from edgefleet.extras import missing_dependency

app = typer.Typer(invoke_without_command=True)


@contextmanager
def _server_extra(command: str) -> Iterator[None]:
    """Imports of the control plane: without the `server` extra, one line saying so."""
    try:
        yield
    except ModuleNotFoundError as e:
        missing = missing_dependency(e, command, prefer="server")
        if missing is None:
            raise
        raise missing from e


DATA_DIR_HELP = "Database and blobs"
DATABASE_URL_HELP = "SQLAlchemy URL [SQLite in the data dir]"


@app.callback()
def server(
    ctx: typer.Context,
    data_dir: Path = typer.Option(None, envvar="EDGEFLEET_DATA_DIR", help=DATA_DIR_HELP),
    host: str = typer.Option(None, envvar="EDGEFLEET_HOST", help="Listen address [127.0.0.1]"),
    port: int = typer.Option(None, envvar="EDGEFLEET_PORT", help="Listen port, 0 = any [8080]"),
    database_url: str = typer.Option(None, envvar="EDGEFLEET_DATABASE_URL", help=DATABASE_URL_HELP),
    heartbeat_interval: float = typer.Option(
        None, envvar="EDGEFLEET_HEARTBEAT_INTERVAL_S", help="Default device heartbeat [15]"
    ),
    roles: str = typer.Option(
        None,
        envvar="EDGEFLEET_ROLES",
        help="What this replica does: api,device,controllers,deltas [all]",
    ),
    log_level: str = typer.Option(
        None, envvar="EDGEFLEET_LOG_LEVEL", help="debug, info, warning or error [info]"
    ),
    tpm_ca_file: Path = typer.Option(
        None,
        envvar="EDGEFLEET_TPM_CA_FILE",
        help="Trust TPMs whose EK certificate these TPM manufacturer CAs (PEM) signed; a "
        "device whose TPM has none, or another, fails attestation [EK certificates not needed]",
    ),
    tls_cert: Path = typer.Option(
        None, envvar="EDGEFLEET_TLS_CERT", help="Serve https with this PEM certificate (chain)"
    ),
    tls_key: Path = typer.Option(None, envvar="EDGEFLEET_TLS_KEY", help="Its PEM private key"),
    client_ca: Path = typer.Option(
        None,
        envvar="EDGEFLEET_CLIENT_CA",
        help="Verify client certificates against these CAs (DATA_DIR/device-ca/ca.crt): "
        "devices may authenticate by mutual TLS",
    ),
    mqtt: str = typer.Option(
        None,
        envvar="EDGEFLEET_MQTT_URL",
        help="MQTT device channel: mqtt[s]://USER:PASSWORD@HOST:PORT of a Mosquitto with the "
        "dynamic-security plugin, as a client that may administer it [HTTP only]",
    ),
) -> None:
    """Run the control plane (operator API, device API) until interrupted.

    The first admin token comes from EDGEFLEET_ADMIN_TOKEN while the data dir has no token.
    Later it is ignored (the server says so): `bootstrap-token` mints another one.

    Its systemd unit: `edgefleet server install-service` (see its --help).
    """
    if ctx.invoked_subcommand is not None:
        return
    if data_dir is None:
        raise typer.BadParameter("required (or EDGEFLEET_DATA_DIR)", ctx=ctx,
                                 param_hint="'--data-dir'")  # fmt: skip
    with _server_extra("edgefleet server"):
        from edgefleet.server.main import serve
        from edgefleet.server.settings import load_server_settings
        from edgefleet.server.workload_settings import load_workload_settings

    settings = load_server_settings(
        data_dir=data_dir,
        host=host,
        port=port,
        database_url=database_url,
        heartbeat_interval_s=heartbeat_interval,
        roles=roles,
        log_level=log_level,
        tpm_ca_file=tpm_ca_file,
        tls_cert=tls_cert,
        tls_key=tls_key,
        client_ca=client_ca,
        mqtt_url=mqtt,
    )
    # One settings object each per process, read here from flags and EDGEFLEET_* once.
    serve(settings, load_workload_settings())


@app.command("bootstrap-token")
def bootstrap_token(
    data_dir: Path = typer.Option(..., envvar="EDGEFLEET_DATA_DIR", help="The server's data dir"),
    database_url: str = typer.Option(None, envvar="EDGEFLEET_DATABASE_URL", help=DATABASE_URL_HELP),
    name: str = typer.Option("local-bootstrap", help="Name of the new token"),
    expires: str = typer.Option(None, help="Lifetime, e.g. 1d (default: never)"),
    output: Output = typer.Option(
        Output.TABLE, "--output", "-o", help="table: the secret alone; json: the token object"
    ),
) -> None:
    """Mint an admin API token in the server's database; print it once.

    For admin access on the server's machine, running server or not; audited as a local
    bootstrap.
    """
    from edgefleet.clock import SystemClock, isoformat_utc
    from edgefleet.core.durations import parse_duration

    with _server_extra("edgefleet server bootstrap-token"):
        from edgefleet.server.services.admin_access import AdminAccess
        from edgefleet.server.services.tokens import TokenService
        from edgefleet.server.settings import load_server_settings
        from edgefleet.store import Database

    lifetime = parse_duration(expires) if expires else None
    settings = load_server_settings(data_dir=data_dir, database_url=database_url)
    if settings.database_url is None and not (data_dir / "edgefleet.db").is_file():
        raise SettingsError(f"no control plane database in {data_dir} (edgefleet.db): give "
                            "the server's --data-dir, or its --database-url")  # fmt: skip
    db = Database(settings.resolved_database_url())
    try:
        clock = SystemClock()
        token, secret = AdminAccess(db, TokenService(db, clock), clock).mint_local_admin(
            name, lifetime
        )
    finally:
        db.dispose()
    if output is Output.JSON:
        print_json({"id": token.id, "name": token.name, "role": str(token.role),
                    "expires_at": isoformat_utc(token.expires_at) if token.expires_at else None,
                    "token": secret})  # fmt: skip
        return
    typer.echo(f"minted admin token {token.id} ({token.name}); the secret below is shown "
               "only once", err=True)  # fmt: skip
    typer.echo(secret)
