"""The device protocol's contract, over both encodings (JSON for HTTP, msgpack for MQTT):
every message round-trips, bad input is refused with the path of the bad field, and the
JSON is byte for byte what the HTTP wire carried before the protocol was typed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core import protocol
from edgefleet.core.protocol import (
    ActiveRelease,
    AgentSection,
    CheckpointReport,
    DesiredState,
    EnrollAnswer,
    EnrollRequest,
    Hardware,
    Inventory,
    Location,
    NodeStatus,
    PowerSource,
    ReleaseStatus,
    ReplicaHealth,
    ReplicaState,
    ReplicaStatus,
    Report,
    ReportAnswer,
    Software,
    TelemetryAck,
    TelemetryBatchHeader,
    WorkloadsReport,
)
from edgefleet.core.protocol.codec import NO_BOUNDS, Bounds
from edgefleet.core.updates.install import InstallState
from edgefleet.errors import InvalidInput

TOP_LEVEL = [EnrollRequest, EnrollAnswer, Report, ReportAnswer, DesiredState,
             TelemetryBatchHeader, TelemetryAck]  # fmt: skip


class Encoding:
    def __init__(self, name: str, encode: Callable[[Any], bytes],
                 decode: Callable[[type, bytes], Any]) -> None:  # fmt: skip
        self.name, self.encode, self.decode = name, encode, decode

    def __repr__(self) -> str:
        return self.name


JSON = Encoding("json", protocol.to_json, protocol.from_json)
BINARY = Encoding("binary", protocol.to_binary, protocol.from_binary)
ENCODINGS = pytest.mark.parametrize("encoding", [JSON, BINARY], ids=repr)


# A strategy for any message, built from the same type hints and bounds the codec reads.

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


def _strategy(tp: Any, bounds: Bounds) -> st.SearchStrategy[Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return st.none() | _strategy(inner, bounds)
    if dataclasses.is_dataclass(tp):
        return messages(tp)  # type: ignore[arg-type]
    if isinstance(tp, type) and issubclass(tp, Enum):
        return st.sampled_from(list(tp))
    if tp is str:
        if bounds.pattern:
            return st.from_regex(bounds.pattern, fullmatch=True)
        return st.text(min_size=bounds.min_len, max_size=min(bounds.max_len or 20, 20))
    if tp is bool:
        return st.booleans()
    if tp is int:
        low = int(bounds.ge) if bounds.ge is not None else -(2**63)
        return st.integers(low, int(bounds.le) if bounds.le is not None else 2**63 - 1)
    if tp is float:
        return st.floats(bounds.ge, bounds.le, allow_nan=False, allow_infinity=False)
    if origin is tuple:
        return st.lists(_strategy(args[0], NO_BOUNDS), max_size=min(bounds.max_len or 3, 3)).map(
            tuple
        )
    if origin in (Mapping, dict):
        values = st.text(max_size=8) if args[1] is str else JSON_VALUES
        return st.dictionaries(st.text(max_size=8), values, max_size=3)
    raise TypeError(tp)


def messages(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: _strategy(hints[f.name], f.metadata.get("bounds", NO_BOUNDS))
        for f in dataclasses.fields(cls)
    }
    return st.builds(cls, **fields)


@ENCODINGS
@pytest.mark.parametrize("kind", TOP_LEVEL, ids=lambda k: k.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_message_round_trips(encoding: Encoding, kind: type, data: st.DataObject) -> None:
    message = data.draw(messages(kind))
    assert encoding.decode(kind, encoding.encode(message)) == message


# Refusals, with the path of what is wrong.

SAMPLE = Report(
    applied_generation=7,
    release=ReleaseStatus(name="m", version="1.0.0", serial=4, state=InstallState.INSTALLED,
                          reason="ok", bytes_done=9, bytes_total=9, bytes_saved=1,
                          active=ActiveRelease(name="m", version="1.0.0", port=8080)),
    inventory=Inventory(
        hardware=Hardware(arch="x86_64", cpu_count=2, memory_mb=1024, disk_mb=10,
                          accelerators=("npu",)),
        software=Software(os="Linux", os_version="6", python="3.11", agent_version="0.1",
                          onnxruntime="1.17", io_signatures=("a",)),
        location=Location(region="eu", zone="a", timezone="UTC", latitude=1.0, longitude=2.0),
    ),
    workloads=WorkloadsReport(
        replicas=tuple(
            ReplicaStatus(workload="w", replica=i, generation=3, state=ReplicaState.RUNNING,
                          health=ReplicaHealth.OK, restarts=1, port=9000 + i, detail="d",
                          restored_sha256="a" * 64, migration="m1")
            for i in range(3)
        ),
        checkpoints=(CheckpointReport(migration="m1", sha256="b" * 64, size_bytes=5,
                                      error="e"),),
    ),
    node=NodeStatus(address="10.0.0.1", cpu_load=0.5, power_source=PowerSource.BATTERY,
                    battery_pct=50.0, scheduled=False),
)  # fmt: skip


def _set(encoding: Encoding, message: Any, path: tuple[str | int, ...], value: Any) -> bytes:
    """`message` encoded, with the field at `path` (names and list indices) set to `value`."""
    if encoding is JSON:
        raw = json.loads(protocol.to_json(message))
        node = raw
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        return json.dumps(raw).encode()
    raw = msgpack.unpackb(protocol.to_binary(message))
    node, cls = raw, type(message)
    offset = 2  # version and code
    for i, step in enumerate(path):
        if isinstance(step, int):
            index = step
        else:
            names = [f.name for f in dataclasses.fields(cls)]
            index = offset + names.index(step)
            tp = typing.get_type_hints(cls)[step]
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            inner = args[0] if args else tp
            if typing.get_origin(inner) is tuple:
                inner = typing.get_args(inner)[0]
            cls = inner
        offset = 0
        if i == len(path) - 1:
            node[index] = value
        else:
            node = node[index]
    return msgpack.packb(raw)


BAD = [
    (("applied_generation",), -1, "report.applied_generation: -1 is outside"),
    (("applied_generation",), "7", "report.applied_generation: expected a number"),
    (("release", "state"), "exploded", "report.release.state: 'exploded' is not one of"),
    (("workloads", "replicas", 2, "state"), "dancing", "report.workloads.replicas[2].state:"),
    (("workloads", "replicas", 1, "port"), 70000, "report.workloads.replicas[1].port:"),
    (("workloads", "replicas", 0, "restored_sha256"), "xyz",
     "report.workloads.replicas[0].restored_sha256: 'xyz' does not match"),
    (("workloads", "checkpoints", 0, "size_bytes"), True,
     "report.workloads.checkpoints[0].size_bytes: expected a number"),
    (("inventory", "hardware", "cpu_count"), 0, "report.inventory.hardware.cpu_count:"),
    (("inventory", "hardware", "arch"), "x" * 33, "report.inventory.hardware.arch: at most 32"),
    (("inventory", "location", "latitude"), 91.0, "report.inventory.location.latitude:"),
    (("node", "battery_pct"), 101.0, "report.node.battery_pct: 101.0 is outside"),
    (("node", "scheduled"), 1, "report.node.scheduled: expected true or false"),
    (("workloads", "replicas"), {"a": 1}, "report.workloads.replicas: expected a list"),
    (("release",), "installed", "report.release: expected"),
]  # fmt: skip


@ENCODINGS
@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=lambda v: str(v)[:40])
def test_bad_fields_are_refused_with_their_path(
    encoding: Encoding, path: tuple[str | int, ...], value: Any, message: str
) -> None:
    assert encoding.decode(Report, encoding.encode(SAMPLE)) == SAMPLE
    with pytest.raises(InvalidInput) as refused:
        encoding.decode(Report, _set(encoding, SAMPLE, path, value))
    assert str(refused.value).startswith(message), str(refused.value)


@ENCODINGS
def test_missing_required_fields_are_named(encoding: Encoding) -> None:
    empty = b"{}" if encoding is JSON else msgpack.packb([protocol.PROTOCOL_VERSION, 3])
    with pytest.raises(InvalidInput, match=r"^report\.applied_generation: missing$"):
        encoding.decode(Report, empty)
    enroll = EnrollRequest(enrollment_token="t", public_key="k", name="n",
                           inventory=SAMPLE.inventory)  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(InvalidInput, match=r"^enroll.inventory.software.python: "):
        encoding.decode(EnrollRequest, _set(encoding, enroll, ("inventory", "software",
                                                                "python"), None))  # fmt: skip


@ENCODINGS
@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"[1, 2", b"\x93\x01\x03", b"null", b"\xff"])
def test_garbage_is_invalid_input_never_another_error(encoding: Encoding, garbage: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"^report"):
        encoding.decode(Report, garbage)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_are_refused_or_decoded_never_crash(data: bytes) -> None:
    for decode in (protocol.from_json, protocol.from_binary):
        with contextlib.suppress(InvalidInput):
            decode(Report, data)


def test_a_device_message_refuses_unknown_fields_an_answer_ignores_them() -> None:
    with pytest.raises(InvalidInput, match=r"^report\.surprise: unknown field$"):
        protocol.from_json(Report, b'{"applied_generation":1,"surprise":1}')
    answer = protocol.from_json(
        ReportAnswer, b'{"desired_generation":2,"heartbeat_interval_s":15,"later":{"x":1}}'
    )
    assert answer == ReportAnswer(desired_generation=2, heartbeat_interval_s=15.0)


def test_binary_messages_carry_version_and_kind() -> None:
    data = protocol.to_binary(ReportAnswer(desired_generation=2, heartbeat_interval_s=15.0))
    assert msgpack.unpackb(data)[:2] == [protocol.PROTOCOL_VERSION, ReportAnswer.code]
    with pytest.raises(InvalidInput, match=r"^report: message code 4, expected 3$"):
        protocol.from_binary(Report, data)
    with pytest.raises(InvalidInput, match=r"^report_answer: protocol version 9"):
        protocol.from_binary(ReportAnswer, msgpack.packb([9, 4, 2, 15.0]))


def test_binary_is_much_smaller_than_json_for_a_heartbeat() -> None:
    assert len(protocol.to_binary(SAMPLE)) < 0.6 * len(protocol.to_json(SAMPLE))


# Golden bytes: the JSON wire is what agents and servers exchanged before the protocol.


def test_a_heartbeat_is_the_json_the_agent_always_sent() -> None:
    # agent/link.py built this dict (release, then what there is to say) and json.dumps'd it.
    before = {
        "applied_generation": 4,
        "release": {"name": "m", "version": "1.0.0", "serial": 2, "state": "health-check",
                    "reason": "", "bytes_done": 10, "bytes_total": 10, "bytes_saved": 0,
                    "active": {"name": "m", "version": "1.0.0", "port": None}},
        "workloads": {"replicas": [{
            "workload": "w", "replica": 0, "generation": 3, "phase": "run", "state": "running",
            "health": "ok", "restarts": 0, "port": 9000, "detail": "", "restored_sha256": None,
            "migration": None}], "checkpoints": [{"migration": "m1", "sha256": "c" * 64,
                                                  "size_bytes": 12, "error": ""}]},
        "node": {"address": "10.0.0.5", "cpu_load": 0.25, "power_source": "mains",
                 "scheduled": True},
    }  # fmt: skip
    report = protocol.from_json(Report, json.dumps(before).encode())
    golden = (
        b'{"applied_generation":4,"release":{"name":"m","version":"1.0.0","serial":2,'
        b'"state":"health-check","reason":"","bytes_done":10,"bytes_total":10,"bytes_saved":0,'
        b'"active":{"name":"m","version":"1.0.0","port":null}},"workloads":{"replicas":[{'
        b'"workload":"w","replica":0,"generation":3,"phase":"run","state":"running",'
        b'"health":"ok","restarts":0,"port":9000,"detail":"","restored_sha256":null,'
        b'"migration":null}],"checkpoints":[{"migration":"m1","sha256":"' + b"c" * 64 + b'",'
        b'"size_bytes":12,"error":""}]},"node":{"address":"10.0.0.5","cpu_load":0.25,'
        b'"power_source":"mains","scheduled":true}}'
    )
    assert protocol.to_json(report) == golden
    assert json.loads(golden) == before


def test_an_enrollment_is_the_json_the_agent_always_sent() -> None:
    before = {
        "enrollment_token": "tok", "public_key": "a2V5", "name": "cam-1",
        "labels": {"site": "x"},
        "inventory": {
            "hardware": {"arch": "aarch64", "cpu_count": 4, "memory_mb": 2048,
                         "disk_mb": 100, "accelerators": []},
            "software": {"os": "Linux", "os_version": "6.1", "python": "3.11.2",
                         "agent_version": "0.1.0", "onnxruntime": None, "io_signatures": []},
            "location": {"region": "eu", "zone": None, "timezone": None, "latitude": None,
                         "longitude": None},
        },
        "heartbeat_interval_s": None,
    }  # fmt: skip
    enroll = protocol.from_json(EnrollRequest, json.dumps(before).encode())
    assert protocol.to_json(enroll) == json.dumps(before, separators=(",", ":")).encode()


def test_the_desired_state_is_the_document_the_server_always_signed() -> None:
    # routes/device_api.py signed json.dumps(doc, ensure_ascii=False, separators=(",", ":")).
    doc = {
        "device_id": "dev-1", "generation": 5, "labels": {"site": "zürich"},
        "agent": {"heartbeat_interval_s": 15.0},
        "release": {"name": "m", "targets": [{"sha256": "a" * 64, "length": 3}]},
        "telemetry": {"sample_interval_s": 30},
        "workloads": {"replicas": []},
    }  # fmt: skip
    signed = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    desired = protocol.from_json(DesiredState, signed)
    assert desired.agent == AgentSection(heartbeat_interval_s=15.0)
    assert protocol.to_json(desired) == signed
    bare = {"device_id": "dev-1", "generation": 0, "labels": {},
            "agent": {"heartbeat_interval_s": 30}}  # fmt: skip
    signed = json.dumps(bare, separators=(",", ":")).encode()
    assert protocol.to_json(protocol.from_json(DesiredState, signed)) == signed.replace(
        b"30}", b"30.0}"
    )


def test_answers_are_the_json_the_server_always_sent() -> None:
    assert protocol.to_json(ReportAnswer(desired_generation=3, heartbeat_interval_s=15.0)) == (
        b'{"desired_generation":3,"heartbeat_interval_s":15.0}'
    )
    answer = EnrollAnswer(device_id="d", enrollment=protocol.messages.EnrollmentState.PENDING,
                          heartbeat_interval_s=30.0)  # fmt: skip
    assert json.loads(protocol.to_json(answer)) == {
        "device_id": "d", "enrollment": "pending", "heartbeat_interval_s": 30.0,
        "trusted_root": None, "root_rotations": [],
    }  # fmt: skip
    ack = TelemetryAck(acked_through_seq=9, stored_windows=4)
    assert protocol.to_json(ack) == b'{"acked_through_seq":9,"stored_windows":4}'
