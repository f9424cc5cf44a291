"""The device's credentials for the MQTT device channel (when the control plane has one).

An approved device asks with a signed request; the control plane makes sure the broker has
its client (`services/broker_accounts.py`), queues its desired state for publishing, and
answers with the username, client id and password to connect with. The password derives
from a secret of the control plane, so asking again gives the same one.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from edgefleet.core.device import Device
from edgefleet.errors import NotFound
from edgefleet.server.auth import signed_device
from edgefleet.server.mqtt_bridge import MqttBridge
from edgefleet.server.schemas.broker import BrokerCredentials
from edgefleet.transport.mqtt_topics import Channel, device_topic

router = APIRouter(prefix="/v1", tags=["device API"])


@router.get(
    "/devices/{device_id}/broker",
    summary="MQTT broker credentials of this device (servers started with --mqtt)",
)
async def broker_credentials(
    request: Request, device_id: str, device: Device = Depends(signed_device)
) -> BrokerCredentials:
    bridge: MqttBridge | None = request.app.state.mqtt_bridge
    if bridge is None:
        raise NotFound("this control plane has no MQTT device channel (--mqtt)",
                       code="mqtt_not_configured")  # fmt: skip
    await bridge.accounts.ensure_device(device.id)
    bridge.desired_changed(device.id)
    return BrokerCredentials(
        username=device.id,
        client_id=device.id,
        password=bridge.accounts.password(device.id),
        report_topic=device_topic(device.id, Channel.REPORT),
        telemetry_topic=device_topic(device.id, Channel.TELEMETRY),
        desired_topic=device_topic(device.id, Channel.DESIRED),
    )
