"""The device channel's MQTT topics: one subtree per device, one topic per message kind.

    edgefleet/v1/devices/{device_id}/report      device → control plane (QoS 1)
    edgefleet/v1/devices/{device_id}/telemetry   device → control plane (QoS 1; properties
                                                 `dropped` and `sealed`)
    edgefleet/v1/devices/{device_id}/desired     control plane → device (QoS 1, retained)
    edgefleet/v1/devices/{device_id}/presence    device (or the broker, its Last Will) →
                                                 control plane (QoS 1): `online`, `offline`

The control plane consumes the device-published kinds through a shared subscription
(`$share/edgefleet/...`), so its replicas split the messages between them.

>>> device_topic("dev-1", Channel.REPORT)
'edgefleet/v1/devices/dev-1/report'
>>> parse_device_topic("edgefleet/v1/devices/dev-1/report")
('dev-1', <Channel.REPORT: 'report'>)
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "edgefleet/v1/devices"
SHARE_GROUP = "edgefleet"


class Channel(StrEnum):
    REPORT = "report"
    TELEMETRY = "telemetry"
    DESIRED = "desired"
    PRESENCE = "presence"


# What devices publish (and the control plane consumes).
FROM_DEVICES = (Channel.REPORT, Channel.TELEMETRY, Channel.PRESENCE)
# A telemetry message's user properties beside its signature: the batch's
# dropped_through_seq, and "1" when the batch is sealed to the control plane's ingest key.
TELEMETRY_DROPPED_THROUGH = "dropped"
TELEMETRY_SEALED = "sealed"


def device_topic(device_id: str, channel: Channel) -> str:
    return f"{PREFIX}/{device_id}/{channel.value}"


def shared_subscription(channel: Channel, group: str = SHARE_GROUP) -> str:
    """The filter through which the control plane's replicas share `channel` of every device."""
    return f"$share/{group}/{PREFIX}/+/{channel.value}"


def parse_device_topic(topic: str) -> tuple[str, Channel] | None:
    """(device id, channel) of a device topic; None for any other topic."""
    head, _, rest = topic.partition(PREFIX + "/")
    if head or not rest:
        return None
    device_id, _, kind = rest.partition("/")
    if not device_id or kind not in Channel.__members__.values():
        return None
    return device_id, Channel(kind)
