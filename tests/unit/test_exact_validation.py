"""Every validator matches the whole value: a trailing newline (which `re.match` with `$`
lets through) or any other trailing character is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.device_names import validate_device_name
from edgefleet.core.group import validate_group_name
from edgefleet.core.labels import (
    KEY_RE,
    VALUE_RE,
    validate_label_key,
    validate_label_value,
)
from edgefleet.core.rollouts.release_train_spec import parse_release_train
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.updates.release import validate_file_name, validate_name
from edgefleet.core.workloads.workload import parse_workload, validate_workload_name
from edgefleet.errors import EdgefleetError
from edgefleet.security.request_signing import read_signed_headers
from edgefleet.transport.http_wire import (
    Origin,
    ProtocolError,
    encode_request_head,
    parse_chunk_size,
    parse_header_field,
    parse_status_line,
    split_url,
)


def _signed_headers(nonce: str) -> dict[str, str]:
    return {
        "x-edgefleet-device": "d-1",
        "x-edgefleet-timestamp": "1700000000",
        "x-edgefleet-nonce": nonce,
        "x-edgefleet-signature": "AAAA",
    }


def _workload(**spec: Any) -> dict[str, Any]:
    return {"name": "web", "resources": {"cpu_millicores": 100, "memory_mb": 64}, **spec}


ORIGIN = Origin("http", "example.com", 80)

# (what, a check that raises on an illegal value, a legal value)
VALIDATORS: list[tuple[str, Callable[[str], object], str]] = [
    ("label key", validate_label_key, "example.com/rack"),
    ("label value", lambda v: validate_label_value("k", v), "eu-west"),
    ("group name", validate_group_name, "cams-eu"),
    ("artifact name", lambda v: validate_name(v, "artifact"), "detector"),
    ("file name", validate_file_name, "model.onnx"),
    ("device name", validate_device_name, "cam-1"),
    ("workload name", validate_workload_name, "web"),
    ("request nonce", lambda v: read_signed_headers(_signed_headers(v)), "n" * 22),
    ("http method", lambda v: encode_request_head(v, "/", ORIGIN, [], 0), "GET"),
    ("http header value", lambda v: encode_request_head("GET", "/", ORIGIN, [("a", v)], 0), "x"),
    ("status line", lambda v: parse_status_line(v.encode() + b"\r\n"), "HTTP/1.1 200 OK"),
    ("header field", lambda v: parse_header_field(b"a: " + v.encode() + b"\r\n"), "b"),
    ("chunk size", lambda v: parse_chunk_size(v.encode() + b"\r\n"), "1f"),
]


# Documents and URLs strip their values: (what, the value kept, a legal value).
STRIPPERS: list[tuple[str, Callable[[str], object], str]] = [
    ("workload artifact", lambda v: parse_workload(_workload(artifacts=[v])).artifacts[0],
     "vision@1.0.0"),
    ("rollout name", lambda v: parse_rollout_spec({"name": v, "release": "a@1"}).name, "r1"),
    ("rollout release", lambda v: str(parse_rollout_spec({"release": v}).release), "a@1.0"),
    (
        "train name",
        lambda v: parse_release_train(
            {"kind": "ReleaseTrain", "metadata": {"name": v}, "spec": {"releases": ["a@1"]}}
        ).name,
        "vision-train",
    ),
    ("request target", lambda v: split_url("http://example.com" + v)[1], "/v1/tuf"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("check", "legal"), [(c, v) for _, c, v in VALIDATORS], ids=[w for w, _, _ in VALIDATORS]
)
def test_every_validator_refuses_a_trailing_newline(
    check: Callable[[str], object], legal: str
) -> None:
    check(legal)
    with pytest.raises((EdgefleetError, ProtocolError)):
        check(legal + "\n")


@pytest.mark.parametrize(
    ("keep", "legal"), [(k, v) for _, k, v in STRIPPERS], ids=[w for w, _, _ in STRIPPERS]
)
def test_a_stripped_value_is_kept_without_its_newline(
    keep: Callable[[str], object], legal: str
) -> None:
    assert keep(legal + "\n") == keep(legal) == legal


@given(st.from_regex(KEY_RE, fullmatch=True), st.from_regex(VALUE_RE, fullmatch=True))
def test_labels_with_a_trailing_newline_are_refused(key: str, value: str) -> None:
    assert validate_label_key(key) == key and validate_label_value(key, value) == value
    with pytest.raises(EdgefleetError):
        validate_label_key(key + "\n")
    with pytest.raises(EdgefleetError):
        validate_label_value(key, value + "\n")
