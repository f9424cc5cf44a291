"""Broker accounts: each approved device's client in Mosquitto's dynamic-security plugin.

A device gets a broker client (username and client id = its device id) with a role of its
own, `edgefleet-device-{id}`, whose ACLs allow exactly its topics: publish its report,
telemetry and presence (its Last Will too: the broker checks a Will's topic when the
client connects), subscribe to its desired state. (Mosquitto 2.0's plugin matches ACL topics
literally, so the role is per device rather than one role with %u patterns.) The control
plane creates it when the device is approved (or asks for its credentials) and deletes it
when the device is revoked, rejected or deleted: the plugin then disconnects the client at
once and refuses it from then on.

The password is not stored anywhere: it is an HMAC of the device id under a secret of the
control plane (DATA_DIR/mqtt-device-secret, created once, shared by the replicas like the
rest of the data dir), so any replica can hand it to the device again.

Commands go to `$CONTROL/dynamic-security/v1` as the control plane's own client (which
administers the plugin); each carries correlation data, and its answer arrives on
`.../response`. Creating what exists already, or deleting what is gone, counts as done, so
every call is idempotent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from edgefleet.errors import Unavailable
from edgefleet.transport.mqtt_client import ReceivedMessage
from edgefleet.transport.mqtt_topics import FROM_DEVICES, Channel, device_topic

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
SECRET_FILE = "mqtt-device-secret"
CONTROL_PLANE_ROLE = "edgefleet-control-plane"
ANSWER_TIMEOUT_S = 15.0
# The errors that mean the plugin already is where the command would take it (Mosquitto
# 2.0 answers addClientRole for a role the client has with "Internal error").
_ALREADY = {
    "createRole": "already exists",
    "createClient": "already exists",
    "addClientRole": "internal error",
    "addRoleACL": "already exists",
    "deleteClient": "not found",
    "deleteRole": "not found",
}

Publish = Callable[[str, bytes], Awaitable[None]]


def device_role(device_id: str) -> str:
    return f"edgefleet-device-{device_id}"


def load_or_create_secret(data_dir: Path) -> bytes:
    """The secret device passwords derive from; created once, atomically (a replica
    starting at the same time reads the same one)."""
    path = data_dir / SECRET_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    temporary = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(secrets.token_bytes(32))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(temporary, path)  # fails if another replica made it first: take theirs
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_bytes()


class BrokerAccounts:
    def __init__(self, secret: bytes, publish: Publish) -> None:
        self._secret = secret
        self._publish = publish
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.known: set[str] = set()  # devices whose client this process created or checked

    def password(self, device_id: str) -> str:
        digest = hmac.new(self._secret, b"edgefleet-mqtt-device\n" + device_id.encode(),
                          hashlib.sha256).digest()  # fmt: skip
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    async def ensure_device(self, device_id: str) -> None:
        """The device's client and role exist, with its password and only its topics."""
        if device_id in self.known:
            return
        role = device_role(device_id)
        acls = [
            {"acltype": "publishClientSend", "topic": device_topic(device_id, channel),
             "allow": True}
            for channel in FROM_DEVICES
        ] + [{"acltype": "subscribeLiteral",
              "topic": device_topic(device_id, Channel.DESIRED), "allow": True}]  # fmt: skip
        # The plugin rewrites its whole configuration file after every change, so a new
        # device costs two changes, not five: the repairs run only for a client that exists
        # already (created before, perhaps disabled or with another password).
        outcomes = await self._run([
            {"command": "createRole", "rolename": role, "acls": acls},
            {"command": "createClient", "username": device_id, "clientid": device_id,
             "password": self.password(device_id), "roles": [{"rolename": role}]},
        ])  # fmt: skip
        if outcomes[0]:  # the role existed: one made before the presence topic lacks its ACL
            await self._run([
                {"command": "addRoleACL", "rolename": role, "acltype": "publishClientSend",
                 "topic": device_topic(device_id, Channel.PRESENCE), "allow": True},
            ])  # fmt: skip
        if outcomes[1]:
            await self._run([
                {"command": "setClientPassword", "username": device_id,
                 "password": self.password(device_id)},
                {"command": "addClientRole", "username": device_id, "rolename": role},
                {"command": "enableClient", "username": device_id},
            ])  # fmt: skip
        self.known.add(device_id)
        log.info("broker client ready", extra={"device_id": device_id})

    async def remove_device(self, device_id: str) -> None:
        """Delete the device's client (the broker disconnects it at once) and its role."""
        await self._run([
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": device_role(device_id)},
        ])  # fmt: skip
        self.known.discard(device_id)
        log.info("broker client deleted", extra={"device_id": device_id})

    async def ensure_control_plane(self, username: str) -> None:
        """The control plane's own client may publish (retained desired states) and
        subscribe on every device topic, beside administering the plugin."""
        topic = "edgefleet/v1/#"
        acls = [
            {"acltype": kind, "topic": topic, "allow": True}
            for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")
        ]
        await self._run([
            {"command": "createRole", "rolename": CONTROL_PLANE_ROLE, "acls": acls},
            {"command": "addClientRole", "username": username, "rolename": CONTROL_PLANE_ROLE},
        ])  # fmt: skip

    def answered(self, message: ReceivedMessage) -> None:
        """Take an answer of the plugin (a message on RESPONSE_TOPIC)."""
        try:
            responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable dynamic-security response")
            return
        for response in responses if isinstance(responses, list) else []:
            future = self._answers.get(str(response.get("correlationData")))
            if future is not None and not future.done():
                future.set_result(response)

    async def _run(self, commands: Sequence[dict[str, Any]]) -> list[str]:
        """Send `commands` in one message; per command "" when it was done now, or the
        plugin's error when it was done already; raise Unavailable naming the first that
        failed otherwise."""
        loop = asyncio.get_running_loop()
        tagged = []
        for command in commands:
            tag = secrets.token_hex(8)
            self._answers[tag] = loop.create_future()
            tagged.append({**command, "correlationData": tag})
        outcomes = []
        try:
            await self._publish(CONTROL_TOPIC, json.dumps({"commands": tagged}).encode())
            for command in tagged:
                tag = command["correlationData"]
                try:
                    answer = await asyncio.wait_for(self._answers[tag], ANSWER_TIMEOUT_S)
                except TimeoutError:
                    raise Unavailable(
                        f"the broker's dynamic-security plugin did not answer "
                        f"{command['command']} (is the plugin loaded, and may this client "
                        "administer it?)"
                    ) from None
                error = str(answer.get("error") or "")
                done_already = _ALREADY.get(command["command"])
                if error and (done_already is None or done_already not in error.lower()):
                    raise Unavailable(f"dynamic-security {command['command']}: {error}")
                outcomes.append(error)
        finally:
            for command in tagged:
                self._answers.pop(command["correlationData"], None)
        return outcomes
