"""`edgefleet tokens ...` (operators' API tokens) and `edgefleet enrollment-tokens ...`."""

from __future__ import annotations

import typer

from edgefleet.cli.output import (
    Column,
    Output,
    OutputOpt,
    ago,
    emit_list,
    emit_object,
    format_time,
)
from edgefleet.core.durations import parse_duration
from edgefleet.security.rbac import Role

app = typer.Typer(help="Operators' API tokens (admin only).", no_args_is_help=True)
enrollment_app = typer.Typer(help="Tokens that let devices enroll.", no_args_is_help=True)



def _expiry(value: str | None) -> str:
    return format_time(value, missing="never")


API_TOKEN_COLUMNS = [
    Column("ID", lambda t: t["id"], "cyan"),
    Column("NAME", lambda t: t["name"]),
    Column("ROLE", lambda t: t["role"]),
    Column("SCOPE", lambda t: t.get("scope") or "fleet"),
    Column("EXPIRES", lambda t: _expiry(t["expires_at"])),
    Column("REVOKED", lambda t: "yes" if t["revoked"] else "no"),
    Column("LAST USED", lambda t: ago(t["last_used_at"])),
]
API_TOKEN_WIDE_COLUMNS = [
    Column("CREATED", lambda t: format_time(t["created_at"])),
    Column("CREATED BY", lambda t: t["created_by"]),
]
SECRET = Column("TOKEN", lambda t: t.get("token") or "-", "bold")


def _seconds(expires: str | None) -> float | None:
    return parse_duration(expires).total_seconds() if expires else None


@app.command("create")
def create_api_token(
    ctx: typer.Context,
    name: str,
    role: Role = typer.Option(
        ..., help="viewer, operator, admin, rollout-approver or release-signer"
    ),
    expires: str = typer.Option(None, help="Lifetime, e.g. 30d (default: never)"),
    scope: str = typer.Option(
        None, help="Limit its changes to devices to this label selector, e.g. 'region=eu', or "
        "to a group's: group:NAME"
    ),
    output: Output = OutputOpt,
) -> None:
    """Create an API token; its secret is shown once."""
    with ctx.obj.client() as client:
        created = client.create_api_token(name, role.value, _seconds(expires), scope)
    emit_object(created, output, [*API_TOKEN_COLUMNS, SECRET])


@app.command("list")
def list_api_tokens(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List API tokens (never their secrets)."""
    with ctx.obj.client() as client:
        emit_list(client.list_api_tokens(), output, API_TOKEN_COLUMNS, wide=API_TOKEN_WIDE_COLUMNS)


@app.command("revoke")
def revoke_api_token(
    ctx: typer.Context,
    token: str = typer.Argument(..., metavar="ID|NAME", help="The token's id, or its name"),
    output: Output = OutputOpt,
) -> None:
    """Revoke an API token, by id or by name (a name several live tokens share is refused:
    use the id)."""
    with ctx.obj.client() as client:
        emit_object(client.revoke_api_token(token), output, API_TOKEN_COLUMNS)


def _uses(t: dict[str, object]) -> str:
    return f"{t['uses']}/{t['max_uses']}" if t["max_uses"] else f"{t['uses']}/∞"


ENROLLMENT_COLUMNS = [
    Column("ID", lambda t: t["id"], "cyan"),
    Column("DESCRIPTION", lambda t: t["description"] or "-"),
    Column("AUTO-APPROVE", lambda t: "yes" if t["auto_approve"] else "no"),
    Column("USES", _uses),
    Column("EXPIRES", lambda t: _expiry(t["expires_at"])),
    Column("REVOKED", lambda t: "yes" if t["revoked"] else "no"),
]
ENROLLMENT_WIDE_COLUMNS = [
    Column("CREATED", lambda t: format_time(t["created_at"])),
    Column("CREATED BY", lambda t: t["created_by"]),
]


@enrollment_app.command("create")
def create_enrollment_token(
    ctx: typer.Context,
    auto_approve: bool = typer.Option(False, help="Devices start approved instead of pending"),
    expires: str = typer.Option(None, help="Lifetime, e.g. 24h (default: never)"),
    max_uses: int = typer.Option(None, min=1, help="How many devices may enroll with it"),
    description: str = typer.Option("", help="What the token is for"),
    output: Output = OutputOpt,
) -> None:
    """Create an enrollment token for devices; its secret is shown once."""
    with ctx.obj.client() as client:
        created = client.create_enrollment_token(
            description, auto_approve, _seconds(expires), max_uses
        )
    emit_object(created, output, [*ENROLLMENT_COLUMNS, SECRET])


@enrollment_app.command("list")
def list_enrollment_tokens(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List enrollment tokens (never their secrets)."""
    with ctx.obj.client() as client:
        emit_list(client.list_enrollment_tokens(), output, ENROLLMENT_COLUMNS,
                  wide=ENROLLMENT_WIDE_COLUMNS, name=lambda t: t["id"])


@enrollment_app.command("revoke")
def revoke_enrollment_token(ctx: typer.Context, token_id: str, output: Output = OutputOpt) -> None:
    """Revoke an enrollment token (enrolled devices are not affected)."""
    with ctx.obj.client() as client:
        emit_object(client.revoke_enrollment_token(token_id), output, ENROLLMENT_COLUMNS)
