"""The device protocol: every message between a device and the control plane, typed, with
one JSON encoding (the HTTP wire) and one compact binary encoding (msgpack, for MQTT).

    >>> from edgefleet.core.protocol import ReportAnswer, from_binary, from_json, to_binary, to_json
    >>> answer = ReportAnswer(desired_generation=3, heartbeat_interval_s=15.0)
    >>> to_json(answer)
    b'{"desired_generation":3,"heartbeat_interval_s":15.0}'
    >>> from_binary(ReportAnswer, to_binary(answer)) == from_json(ReportAnswer, to_json(answer))
    True

Transports carry the bytes; the agent, the device routes, the simulator and the lab build
and read these classes only. Decoding is the one place device input is checked: it raises
edgefleet.errors.InvalidInput naming the field (`report.release.state: ...`).
"""

from edgefleet.core.protocol.codec import (
    PROTOCOL_VERSION,
    from_binary,
    from_dict,
    from_json,
    to_binary,
    to_dict,
    to_json,
)
from edgefleet.core.protocol.messages import (
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
    ReplicaPhaseName,
    ReplicaState,
    ReplicaStatus,
    Report,
    ReportAnswer,
    Software,
    TelemetryAck,
    TelemetryBatchHeader,
    WorkloadsReport,
)

__all__ = [
    "PROTOCOL_VERSION",
    "ActiveRelease",
    "AgentSection",
    "CheckpointReport",
    "DesiredState",
    "EnrollAnswer",
    "EnrollRequest",
    "Hardware",
    "Inventory",
    "Location",
    "NodeStatus",
    "PowerSource",
    "ReleaseStatus",
    "ReplicaHealth",
    "ReplicaPhaseName",
    "ReplicaState",
    "ReplicaStatus",
    "Report",
    "ReportAnswer",
    "Software",
    "TelemetryAck",
    "TelemetryBatchHeader",
    "WorkloadsReport",
    "from_binary",
    "from_dict",
    "from_json",
    "to_binary",
    "to_dict",
    "to_json",
]
