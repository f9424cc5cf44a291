"""`edgefleet devices ...` and `edgefleet groups ...`."""

from __future__ import annotations

from typing import Any

import typer

from edgefleet.cli.help_text import describe, examples
from edgefleet.cli.output import (
    Column,
    Output,
    OutputOpt,
    ago,
    console,
    emit_document,
    emit_list,
    emit_object,
    format_labels,
    format_time,
    print_names,
    styled,
)
from edgefleet.core.labels import parse_label_change
from edgefleet.core.updates.release import parse_ref

app = typer.Typer(help="List, inspect, approve and label devices.", no_args_is_help=True)
groups_app = typer.Typer(help="Named label selectors.", no_args_is_help=True)


def _generation(d: dict[str, Any]) -> str:
    mark = "" if d["in_sync"] else " [yellow]*[/yellow]"
    return f"{d['applied_generation']}/{d['desired_generation']}{mark}"


DEVICE_COLUMNS = [
    Column("ID", lambda d: d["id"], "cyan"),
    Column("NAME", lambda d: d["name"]),
    Column("ENROLLMENT", lambda d: styled(d["enrollment"])),
    Column("STATUS", lambda d: styled(d["status"])),
    Column("LABELS", lambda d: format_labels(d["labels"])),
    Column("LAST SEEN", lambda d: ago(d["last_seen"])),
    Column("GEN", _generation),
    Column("ATTESTATION", lambda d: _attestation_status(d)),
]
DEVICE_WIDE_COLUMNS = [
    Column("ARCH", lambda d: d["inventory"].get("hardware", {}).get("arch") or "-"),
    Column("AGENT", lambda d: d["inventory"].get("software", {}).get("agent_version") or "-"),
    Column("RELEASE", lambda d: _running(d)),
    Column("ENROLLED", lambda d: format_time(d["created_at"])),
]


def _running(d: dict[str, Any]) -> str:
    status = d.get("release_status") or {}
    return f"{status['name']}@{status['version']} {status['state']}" if status else "-"


def _hardware(d: dict[str, Any]) -> str:
    hw = d["inventory"].get("hardware", {})
    if not hw:
        return "-"
    accel = ", ".join(hw.get("accelerators") or []) or "none"
    return (
        f"{hw.get('arch')} · {hw.get('cpu_count')} CPU · {hw.get('memory_mb')} MB RAM · "
        f"{hw.get('disk_mb')} MB free · accelerators: {accel}"
    )


def _software(d: dict[str, Any]) -> str:
    sw = d["inventory"].get("software", {})
    if not sw:
        return "-"
    ort = sw.get("onnxruntime") or "not installed"
    return (
        f"{sw.get('os_version') or sw.get('os')} · Python {sw.get('python')} · "
        f"agent {sw.get('agent_version')} · onnxruntime {ort}"
    )


def _location(d: dict[str, Any]) -> str:
    loc = d["inventory"].get("location") or {}
    parts = [f"{k}={v}" for k, v in loc.items() if v is not None]
    return ", ".join(parts) or "-"


def _release(d: dict[str, Any]) -> str:
    assigned = d.get("release")
    status = d.get("release_status") or {}
    if not assigned and not status:
        return "-"
    parts = []
    if assigned:
        staged = " (stage only)" if assigned["stage_only"] else ""
        parts.append(f"assigned {assigned['name']}@{assigned['version']}{staged}")
    if status:
        state = status["state"]
        if state == "downloading" and status.get("bytes_total"):
            state += f" {status['bytes_done']}/{status['bytes_total']} bytes"
        parts.append(f"{status['name']}@{status['version']}: {styled(state)}")
        if status.get("reason"):
            parts.append(status["reason"])
        active = status.get("active")
        if active:
            where = f" on port {active['port']}" if active.get("port") else ""
            parts.append(f"running {active['name']}@{active['version']}{where}")
    return " · ".join(parts)


def _attestation_status(d: dict[str, Any]) -> str:
    status = (d.get("attestation") or {}).get("status")
    return styled(status) if status else "-"


def _attestation(d: dict[str, Any]) -> str:
    """`failed (why) · at TIME · PCRs 16 · withholds releases`; `-` when never attested."""
    record = d.get("attestation") or {}
    if not record.get("status"):
        return "-"
    parts = [f"{styled(record['status'])} ({record['reason']})",
             f"at {format_time(record['attested_at'])}",
             f"PCRs {', '.join(sorted(record['pcrs'], key=int))}" if record["pcrs"] else
             "no TPM quote"]  # fmt: skip
    if record.get("withholds"):
        parts.append(f"withholds {', '.join(record['withholds'])}")
    return " · ".join(parts)


def _tpm(d: dict[str, Any]) -> str:
    """`AK certified under EK 000b… · EK certificate issued by …`; `-` without a TPM."""
    record = d.get("attestation") or {}
    if record.get("ak_certified"):
        return (f"AK certified under EK {record['ek_name']} · "
                f"EK certificate {record['ek_certificate']}")  # fmt: skip
    return "AK not certified" if record.get("tpm") else "-"


DEVICE_FIELDS = [
    Column("id", lambda d: d["id"]),
    Column("name", lambda d: d["name"]),
    Column("enrollment", lambda d: styled(d["enrollment"])),
    Column("status", lambda d: f"{styled(d['status'])} (last seen {ago(d['last_seen'])})"),
    Column("labels", lambda d: format_labels(d["labels"])),
    Column("hardware", _hardware),
    Column("software", _software),
    Column("location", _location),
    Column("heartbeat", lambda d: f"every {d['heartbeat_interval_s']:g}s"),
    Column(
        "generation",
        lambda d: (
            f"applied {d['applied_generation']}, "
            f"desired {d['desired_generation']}" + ("" if d["in_sync"] else " (converging)")
        ),
    ),
    Column("release", lambda d: _release(d)),
    Column("attestation", lambda d: _attestation(d)),
    Column("tpm", lambda d: _tpm(d)),
    Column("enrolled", lambda d: format_time(d["created_at"])),
]


@app.command("list")
def list_devices(
    ctx: typer.Context,
    selector: str = typer.Option(None, "--selector", "-l", help="e.g. 'region=eu,!canary'"),
    group: str = typer.Option(None, "--group", "-g", help="Only devices of this group"),
    status: str = typer.Option(None, help="online, stale or offline"),
    enrollment: str = typer.Option(None, help="pending, approved, rejected or revoked"),
    output: Output = OutputOpt,
) -> None:
    """List devices with their enrollment and connection status."""
    with ctx.obj.client() as client:
        rows = client.list_devices(selector, group, status, enrollment)
        attested = {a["device_id"]: a for a in client.list_attestations()}
    for row in rows:
        row["attestation"] = attested.get(row["id"])
    emit_list(rows, output, DEVICE_COLUMNS, wide=DEVICE_WIDE_COLUMNS)


@app.command("show")
def show_device(ctx: typer.Context, device: str, output: Output = OutputOpt) -> None:
    """Show one device: inventory, labels, status and desired state."""
    with ctx.obj.client() as client:
        shown = client.get_device(device)
        shown["attestation"] = client.get_attestation(shown["id"])
    emit_object(shown, output, DEVICE_FIELDS)


def _change_enrollment(ctx: typer.Context, devices: list[str], action: str, output: Output) -> None:
    with ctx.obj.client() as client:
        changed = [client.change_enrollment(d, action) for d in devices]
    emit_list(changed, output, DEVICE_COLUMNS, wide=DEVICE_WIDE_COLUMNS)


@app.command("approve")
def approve(ctx: typer.Context, devices: list[str], output: Output = OutputOpt) -> None:
    """Approve pending (or rejected) devices, by id or name."""
    _change_enrollment(ctx, devices, "approve", output)


@app.command("reject")
def reject(ctx: typer.Context, devices: list[str], output: Output = OutputOpt) -> None:
    """Reject pending devices."""
    _change_enrollment(ctx, devices, "reject", output)


@app.command("revoke")
def revoke(ctx: typer.Context, devices: list[str], output: Output = OutputOpt) -> None:
    """Revoke devices: their key is no longer accepted (they must re-enroll with a new key)."""
    _change_enrollment(ctx, devices, "revoke", output)


@app.command(
    "delete",
    epilog=examples(
        "edgefleet devices delete cam-7",
        "edgefleet devices list -l site=closed -o name | xargs edgefleet devices delete",
    ),
)
def delete(
    ctx: typer.Context,
    devices: list[str] = typer.Argument(..., metavar="ID|NAME"),
    output: Output = OutputOpt,
) -> None:
    """Decommission devices: their key, nonces, desired state and telemetry are forgotten,
    they leave rollouts and placement, and their names are free. The audit log keeps their
    history; a deleted agent is refused (it must enroll again as a new device)."""
    with ctx.obj.client() as client:
        deleted = [client.delete_device(d) for d in devices]
    if output is Output.TABLE or output is Output.WIDE:
        for d in deleted:
            console.print(f"device {d['name']} ({d['id']}) deleted", highlight=False)
        return
    emit_list(deleted, output, DEVICE_COLUMNS)


@app.command("label")
def label(
    ctx: typer.Context,
    device: str,
    changes: list[str] = typer.Argument(..., help="key=value to set, key- to remove"),
    output: Output = OutputOpt,
) -> None:
    """Set and remove labels: `edgefleet devices label cam-1 tier=gold canary-`."""
    change = parse_label_change(changes)
    with ctx.obj.client() as client:
        result = client.label_device(device, dict(change.set), sorted(change.remove))
    emit_list([result], output, DEVICE_COLUMNS)


@app.command("configure")
def configure(
    ctx: typer.Context,
    device: str,
    heartbeat_interval: float = typer.Option(..., help="Seconds between heartbeats (1-3600)"),
    output: Output = OutputOpt,
) -> None:
    """Change a device's agent settings; the agent picks them up within a second."""
    with ctx.obj.client() as client:
        result = client.configure_device(device, heartbeat_interval)
    emit_list([result], output, DEVICE_COLUMNS)


@app.command("set-release")
def set_release(
    ctx: typer.Context,
    release: str = typer.Argument(..., help="NAME@VERSION (must be signed)"),
    device: str = typer.Option(None, "--device", "-d", help="One device (id or name)"),
    selector: str = typer.Option(None, "--selector", "-l", help="Or: every matching device"),
    stage_only: bool = typer.Option(
        False, help="Deliver and verify now; install later with `devices activate`"
    ),
    output: Output = OutputOpt,
) -> None:
    """Put a signed release into devices' desired state. Incompatible devices are skipped
    (selector) or refused (single device) with the reason."""
    ref = parse_ref(release, "release")
    with ctx.obj.client() as client:
        result = client.assign_release(ref.name, ref.version, device, selector, stage_only)
    if output.is_document:
        emit_document(result, output)
        return
    if output is Output.NAME:
        print_names(result["assigned"])
        return
    console.print(
        f"assigned {ref} to {len(result['assigned'])} device(s)"
        + (" (stage only)" if stage_only else "")
    )
    for skipped in result["skipped"]:
        console.print(
            f"[yellow]skipped[/yellow] {skipped['name']} ({skipped['id']}): {skipped['reason']}"
        )


@app.command("activate")
def activate(ctx: typer.Context, device: str, output: Output = OutputOpt) -> None:
    """Install the release a device holds staged (after set-release --stage-only)."""
    with ctx.obj.client() as client:
        emit_list([client.activate(device)], output, DEVICE_COLUMNS)


GROUP_COLUMNS = [
    Column("NAME", lambda g: g["name"], "cyan"),
    Column("SELECTOR", lambda g: g["selector"] or "(all devices)"),
    Column("DESCRIPTION", lambda g: g["description"] or "-"),
    Column("CREATED BY", lambda g: g["created_by"]),
]


@groups_app.command("create")
def create_group(
    ctx: typer.Context,
    name: str,
    selector: str = typer.Option(..., "--selector", "-l", help="Label selector"),
    description: str = typer.Option("", help="What the group is for"),
    output: Output = OutputOpt,
) -> None:
    """Create a group: a name for a label selector."""
    with ctx.obj.client() as client:
        emit_object(client.create_group(name, selector, description), output, GROUP_COLUMNS)


@groups_app.command("list")
def list_groups(ctx: typer.Context, output: Output = OutputOpt) -> None:
    """List groups."""
    with ctx.obj.client() as client:
        emit_list(client.list_groups(), output, GROUP_COLUMNS)


@groups_app.command("show")
def show_group(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Show a group and the devices it matches now."""
    with ctx.obj.client() as client:
        group = client.get_group(name)
    fields = [*GROUP_COLUMNS, Column("DEVICES", lambda g: ", ".join(g["devices"]) or "-")]
    emit_object(group, output, fields)


@groups_app.command("delete")
def delete_group(ctx: typer.Context, name: str) -> None:
    """Delete a group (devices are not affected)."""
    with ctx.obj.client() as client:
        client.delete_group(name)
    typer.echo(f"group {name} deleted")


@app.command("ca")
def device_ca(
    ctx: typer.Context,
    crl: bool = typer.Option(False, "--crl", help="The revocation list instead"),
) -> None:
    """The device CA's certificate (PEM) that issues device certificates, for a broker's
    `cafile` or a device's trust store; with --crl, its revocation list (`crlfile`)."""
    with ctx.obj.client() as client:
        pem = client.device_ca_crl() if crl else client.device_ca_certificate()
    typer.echo(pem, nl=not pem.endswith("\n"))


describe(app, {
    "list": ["edgefleet devices list -l 'region=eu,!canary' --status online",
             "edgefleet devices list --enrollment pending -o name",
             "edgefleet devices list -o wide | grep cam-1"],
    "show": ["edgefleet devices show cam-1", "edgefleet devices show cam-1 -o yaml"],
    "approve": ["edgefleet devices approve cam-1 cam-2",
                "edgefleet devices list --enrollment pending -o name "
                "| xargs edgefleet devices approve"],
    "reject": ["edgefleet devices reject rogue-7"],
    "revoke": ["edgefleet devices revoke cam-9"],
    "label": ["edgefleet devices label cam-1 tier=gold canary-"],
    "configure": ["edgefleet devices configure cam-1 --heartbeat-interval 10"],
    "set-release": ["edgefleet devices set-release vision@1.2.0 -d cam-1",
                    "edgefleet devices set-release vision@1.2.0 -l kind=camera --stage-only"],
    "activate": ["edgefleet devices activate cam-1"],
    "ca": ["edgefleet devices ca > device-ca.pem",
           "edgefleet devices ca --crl > device-ca.crl"],
})  # fmt: skip
describe(groups_app, {
    "create": ["edgefleet groups create cams-eu -l 'kind=camera,region=eu'"],
    "list": ["edgefleet groups list -o name"],
    "show": ["edgefleet groups show cams-eu"],
    "delete": ["edgefleet groups delete cams-eu"],
})  # fmt: skip
