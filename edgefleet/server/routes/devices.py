"""Operator API for devices: list, show, approve/reject/revoke, label, configure, delete."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from edgefleet.core.device import ConnectionStatus
from edgefleet.core.enrollment import EnrollmentAction, EnrollmentState
from edgefleet.core.labels import make_label_change
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires
from edgefleet.server.composition import Services, services
from edgefleet.server.schemas.devices import ConfigureRequest, DeviceOut, LabelRequest
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1/devices", tags=["devices"])


@router.get("", summary="List devices", response_model=list[DeviceOut])
def list_devices(
    selector: str | None = Query(None, description="Label selector, e.g. region=eu,!canary"),
    group: str | None = Query(None, description="Only devices matching this group's selector"),
    status: ConnectionStatus | None = None,
    enrollment: EnrollmentState | None = None,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[DeviceOut]:
    found = svc.devices.list_devices(ctx, selector, group, status, enrollment)
    now = svc.devices.now()
    return [DeviceOut.of(d, now) for d in found]


@router.get("/{device}", summary="Show one device (by id or unique name)")
def show_device(
    device: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> DeviceOut:
    return DeviceOut.of(svc.devices.get(ctx, device), svc.devices.now())


def _enrollment_route(action: EnrollmentAction) -> None:
    def change(
        device: str,
        ctx: OperatorContext = Depends(requires(Permission.DEVICES_WRITE)),
        svc: Services = Depends(services),
    ) -> DeviceOut:
        return DeviceOut.of(svc.devices.change_enrollment(ctx, device, action), svc.devices.now())

    router.add_api_route(
        f"/{{device}}/{action.value}",
        change,
        methods=["POST"],
        summary=f"{action.value.capitalize()} a device",
        name=f"{action.value}_device",
    )


for _action in EnrollmentAction:
    _enrollment_route(_action)


@router.delete(
    "/{device}",
    summary="Delete (decommission) a device, by id or name",
    responses={404: {"description": "No such device"}},
)
def delete_device(
    device: str,
    ctx: OperatorContext = Depends(requires(Permission.DEVICES_WRITE)),
    svc: Services = Depends(services),
) -> DeviceOut:
    """Forget the device's key, nonces, desired state, telemetry and liveness; release it
    from rollouts and placement. The audit trail keeps its history; its name is free."""
    return DeviceOut.of(svc.devices.delete(ctx, device), svc.devices.now())


@router.post("/{device}/labels", summary="Set and remove labels")
def label_device(
    device: str,
    body: LabelRequest,
    ctx: OperatorContext = Depends(requires(Permission.DEVICES_WRITE)),
    svc: Services = Depends(services),
) -> DeviceOut:
    change = make_label_change(body.set, body.remove)
    return DeviceOut.of(svc.devices.relabel(ctx, device, change), svc.devices.now())


@router.patch("/{device}/config", summary="Change agent settings (heartbeat interval)")
def configure_device(
    device: str,
    body: ConfigureRequest,
    ctx: OperatorContext = Depends(requires(Permission.DEVICES_WRITE)),
    svc: Services = Depends(services),
) -> DeviceOut:
    saved = svc.devices.configure(ctx, device, body.heartbeat_interval_s)
    return DeviceOut.of(saved, svc.devices.now())
