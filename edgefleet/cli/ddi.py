"""`edgefleet ddi ...`: hawkBit DDI targets and gateway tokens (docs/interop.md)."""

from __future__ import annotations

import typer

from edgefleet.cli.output import Column, Output, OutputOpt, emit_list, emit_object, format_time
from edgefleet.errors import InvalidInput

app = typer.Typer(help="hawkBit DDI clients: targets and gateway tokens.", no_args_is_help=True)
targets_app = typer.Typer(help="DDI targets (devices that speak hawkBit DDI).",
                          no_args_is_help=True)  # fmt: skip
gateway_app = typer.Typer(help="DDI gateway tokens (act for any target of the tenant).",
                          no_args_is_help=True)  # fmt: skip
app.add_typer(targets_app, name="targets")
app.add_typer(gateway_app, name="gateway-token")

TOKEN = Column("TOKEN", lambda t: t.get("token") or "-", "bold")
TARGET_FIELDS = [
    Column("ID", lambda t: t["id"], "cyan"),
    Column("CONTROLLER ID", lambda t: t["controller_id"]),
    Column("TENANT", lambda t: t["tenant"]),
    Column("ENROLLMENT", lambda t: t["enrollment"]),
    Column("LABELS", lambda t: ",".join(f"{k}={v}" for k, v in t["labels"].items()) or "-"),
    Column("POLL", lambda t: t["poll_path"]),
    TOKEN,
]
GATEWAY_COLUMNS = [
    Column("ID", lambda t: t["id"], "cyan"),
    Column("TENANT", lambda t: t["tenant"]),
    Column("DESCRIPTION", lambda t: t["description"] or "-"),
    Column("AUTO-APPROVE", lambda t: "yes" if t["auto_approve"] else "no"),
    Column("REVOKED", lambda t: "yes" if t["revoked"] else "no"),
    Column("CREATED", lambda t: format_time(t["created_at"])),
]


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"--label {pair!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


@targets_app.command("create")
def create_target(
    ctx: typer.Context,
    controller_id: str = typer.Argument(..., help="The client's controller id (its name)"),
    label: list[str] = typer.Option([], "--label", help="KEY=VALUE, repeatable"),
    output: Output = OutputOpt,
) -> None:
    """Create an approved DDI target; its TargetToken is shown once."""
    with ctx.obj.client() as client:
        created = client.create_ddi_target(controller_id, _labels(label))
    emit_object(created, output, TARGET_FIELDS)


@gateway_app.command("create")
def create_gateway_token(
    ctx: typer.Context,
    description: str = typer.Option("", help="What the token is for"),
    auto_approve: bool = typer.Option(False, help="Targets it enrolls start approved"),
    output: Output = OutputOpt,
) -> None:
    """Create a GatewayToken; its secret is shown once."""
    with ctx.obj.client() as client:
        created = client.create_ddi_gateway_token(description, auto_approve)
    emit_object(created, output, [*GATEWAY_COLUMNS, TOKEN])


@gateway_app.command("list")
def list_gateway_tokens(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List GatewayTokens (never their secrets)."""
    with ctx.obj.client() as client:
        emit_list(client.list_ddi_gateway_tokens(), output, GATEWAY_COLUMNS,
                  name=lambda t: t["id"])  # fmt: skip


@gateway_app.command("revoke")
def revoke_gateway_token(ctx: typer.Context, token_id: str, output: Output = OutputOpt) -> None:
    """Revoke a GatewayToken: requests with it are refused (401)."""
    with ctx.obj.client() as client:
        emit_object(client.revoke_ddi_gateway_token(token_id), output, GATEWAY_COLUMNS)
