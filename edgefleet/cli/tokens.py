"""`edgefleet tokens ...` (operators' API tokens), `edgefleet roles ...` (the roles they
hold; custom ones are applied with `edgefleet apply -f`) and `edgefleet enrollment-tokens
...`."""

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

app = typer.Typer(help="Operators' API tokens (admin only).", no_args_is_help=True)
roles_app = typer.Typer(help="Roles API tokens hold: built-in and custom (admin only).",
                        no_args_is_help=True)  # fmt: skip
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
    role: str = typer.Option(
        ...,
        help="viewer, operator, admin, rollout-approver, release-signer, or a custom "
        "role's name (edgefleet roles list)",
    ),
    expires: str = typer.Option(None, help="Lifetime, e.g. 30d (default: never)"),
    scope: str = typer.Option(
        None,
        help="Limit its changes to devices to this label selector, e.g. 'region=eu', or "
        "to a group's: group:NAME",
    ),
    output: Output = OutputOpt,
) -> None:
    """Create an API token; its secret is shown once."""
    with ctx.obj.client() as client:
        created = client.create_api_token(name, role, _seconds(expires), scope)
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


ROLE_COLUMNS = [
    Column("NAME", lambda r: r["name"], "cyan"),
    Column("KIND", lambda r: "built-in" if r["builtin"] else "custom"),
    Column("PERMISSIONS", lambda r: ", ".join(r["permissions"])),
    Column("TOKENS", lambda r: "-" if r["tokens"] is None else str(len(r["tokens"]))),
]
ROLE_FIELDS = [
    *ROLE_COLUMNS[:3],
    Column("DESCRIPTION", lambda r: r["description"] or "-"),
    Column("TOKENS", lambda r: ", ".join(r["tokens"] or []) or "-"),
    Column("UPDATED BY", lambda r: r["updated_by"] or "-"),
]


@roles_app.command("list")
def list_roles(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """Built-in and custom roles, with their permissions and how many tokens that are not
    revoked hold each custom one."""
    with ctx.obj.client() as client:
        emit_list(client.list_roles(), output, ROLE_COLUMNS)


@roles_app.command("show")
def show_role(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """A role's permissions, and the tokens holding it."""
    with ctx.obj.client() as client:
        emit_object(client.get_role(name), output, ROLE_FIELDS)


@roles_app.command("delete")
def delete_role(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Delete a custom role (refused while a token that is not revoked holds it)."""
    with ctx.obj.client() as client:
        emit_object(client.delete_role(name), output, [Column("DELETED", lambda d: d["deleted"])])


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
        emit_list(
            client.list_enrollment_tokens(),
            output,
            ENROLLMENT_COLUMNS,
            wide=ENROLLMENT_WIDE_COLUMNS,
            name=lambda t: t["id"],
        )


@enrollment_app.command("revoke")
def revoke_enrollment_token(ctx: typer.Context, token_id: str, output: Output = OutputOpt) -> None:
    """Revoke an enrollment token (enrolled devices are not affected)."""
    with ctx.obj.client() as client:
        emit_object(client.revoke_enrollment_token(token_id), output, ENROLLMENT_COLUMNS)
