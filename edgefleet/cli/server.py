"""`edgefleet server`: run the control plane."""

from __future__ import annotations

from pathlib import Path

import typer


def server(
    data_dir: Path = typer.Option(..., envvar="EDGEFLEET_DATA_DIR", help="Database and blobs"),
    host: str = typer.Option(None, envvar="EDGEFLEET_HOST", help="Listen address [127.0.0.1]"),
    port: int = typer.Option(None, envvar="EDGEFLEET_PORT", help="Listen port, 0 = any [8080]"),
    database_url: str = typer.Option(
        None, envvar="EDGEFLEET_DATABASE_URL", help="SQLAlchemy URL [SQLite in the data dir]"
    ),
    heartbeat_interval: float = typer.Option(
        None, envvar="EDGEFLEET_HEARTBEAT_INTERVAL_S", help="Default device heartbeat [15]"
    ),
    log_level: str = typer.Option(None, envvar="EDGEFLEET_LOG_LEVEL", help="[info]"),
) -> None:
    """Run the control plane (operator API, device API) until interrupted.

    The first admin token comes from EDGEFLEET_ADMIN_TOKEN when the data dir is new.
    """
    from edgefleet.server.main import serve
    from edgefleet.server.settings import load_server_settings

    settings = load_server_settings(
        data_dir=data_dir,
        host=host,
        port=port,
        database_url=database_url,
        heartbeat_interval_s=heartbeat_interval,
        log_level=log_level,
    )
    serve(settings)
