from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.updates.compat import evaluate_compatibility, parse_requirements
from edgefleet.errors import InvalidInput

SIGNATURE = "df376d944c9230ad345ad095298fb708f79ce6c7ef029e84bd7b5ade733db1df"


def inventory(**hardware: Any) -> dict[str, Any]:
    return {
        "hardware": {
            "arch": "aarch64",
            "cpu_count": 4,
            "memory_mb": 1024,
            "disk_mb": 8000,
            "accelerators": ["npu"],
            **hardware,
        },
        "software": {
            "os": "Linux",
            "os_version": "5.15.0-91-generic",
            "python": "3.11.4",
            "agent_version": "0.1.0",
            "onnxruntime": "1.18.1",
            "io_signatures": [SIGNATURE],
        },
        "location": {"site": "plant-7"},
    }


EVERYTHING = [
    "arch=aarch64|x86_64",
    "os=linux",
    "min_memory_mb=512",
    "min_disk_mb=4000",
    "min_cpu_count=2",
    "accelerator=npu",
    "runtime=onnxruntime>=1.17,<2",
    "runtime=python>=3.11",
    f"io_signature={SIGNATURE}",
    "label.tier=gold|silver",
]


def test_a_device_that_meets_everything_is_compatible() -> None:
    verdict = evaluate_compatibility(parse_requirements(EVERYTHING), inventory(), {"tier": "gold"})
    assert verdict.compatible
    assert verdict.reason == "compatible"


def test_no_requirements_means_compatible_with_anything() -> None:
    assert evaluate_compatibility(parse_requirements([]), {}).compatible


def test_each_failed_requirement_has_its_own_reason() -> None:
    reqs = parse_requirements(EVERYTHING)
    device = inventory(arch="armv7l", memory_mb=256, accelerators=[])
    device["software"]["onnxruntime"] = "1.16.3"
    verdict = evaluate_compatibility(reqs, device, {"tier": "bronze"})
    assert not verdict.compatible
    reasons = {f.requirement: f.reason for f in verdict.failures}
    assert reasons == {
        "arch=aarch64|x86_64": "device arch is armv7l",
        "min_memory_mb=512": "device has 256 MB memory",
        "accelerator=npu": "device accelerators are none",
        "runtime=onnxruntime>=1.17,<2": "device has onnxruntime 1.16.3",
        "label.tier=gold|silver": "device label tier=bronze",
    }
    assert "min_memory_mb=512: device has 256 MB memory" in verdict.reason


def test_unreported_facts_fail_closed() -> None:
    reqs = parse_requirements(["min_disk_mb=1", "runtime=onnxruntime", "io_signature=abc"])
    verdict = evaluate_compatibility(reqs, {"hardware": {}, "software": {}})
    assert [f.reason for f in verdict.failures] == [
        "device does not report hardware.disk_mb",
        "device has no onnxruntime",
        "device does not report its io signatures",
    ]


def test_incompatible_model_interface_is_refused() -> None:
    other = "0" * 64
    verdict = evaluate_compatibility(parse_requirements([f"io_signature={other}"]), inventory())
    assert not verdict.compatible
    assert verdict.failures[0].reason == f"device io signatures are {SIGNATURE}"


def test_arch_aliases_and_case() -> None:
    reqs = parse_requirements(["arch=ARM64"])
    assert reqs.to_strings() == ["arch=aarch64"]
    assert evaluate_compatibility(reqs, inventory(arch="arm64")).compatible
    amd64 = parse_requirements(["arch=amd64"])
    assert evaluate_compatibility(amd64, inventory(arch="x86_64")).compatible


def test_unparseable_device_version_is_a_reason_not_a_crash() -> None:
    device = inventory()
    device["software"]["onnxruntime"] = "nightly"
    verdict = evaluate_compatibility(parse_requirements(["runtime=onnxruntime>=1"]), device)
    assert "not a version" in verdict.reason


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("arch", "expected KEY=VALUE"),
        ("=x86_64", "expected KEY=VALUE"),
        ("arch=", "expected KEY=VALUE"),
        ("gpu=yes", "unknown key 'gpu'"),
        ("min_memory_mb=lots", "'lots' is not an integer"),
        ("min_memory_mb=-1", "must not be negative"),
        ("runtime=onnxruntime>=banana", "invalid version"),
        ("arch=x86_64||aarch64", "empty choice"),
        ("label.=gold", "invalid label key"),
        ("label.tier=not valid!", "invalid value"),
    ],
)
def test_bad_syntax_names_the_item(item: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        parse_requirements(["os=linux", item])
    assert repr(item) in caught.value.message


def test_a_single_string_is_not_a_list_of_requirements() -> None:
    with pytest.raises(InvalidInput):
        parse_requirements("arch=x86_64")


memories = st.integers(min_value=0, max_value=1 << 20)
requirement_lists = st.lists(
    st.sampled_from([*EVERYTHING[:-1], "min_memory_mb=2048", "arch=x86_64", "os=windows"]),
    max_size=6,
)


@given(requirement_lists)
def test_canonical_strings_parse_back_to_the_same_requirements(items: list[str]) -> None:
    reqs = parse_requirements(items)
    assert parse_requirements(reqs.to_strings()) == reqs


@given(requirement_lists, memories, memories)
def test_more_memory_never_makes_a_device_incompatible(
    items: list[str], low: int, high: int
) -> None:
    low, high = sorted((low, high))
    reqs = parse_requirements(items)
    if evaluate_compatibility(reqs, inventory(memory_mb=low)).compatible:
        assert evaluate_compatibility(reqs, inventory(memory_mb=high)).compatible


@given(requirement_lists)
def test_verdict_lists_exactly_the_requirements_that_fail_alone(items: list[str]) -> None:
    reqs = parse_requirements(items)
    device = inventory(memory_mb=1000)
    failed = [f.requirement for f in evaluate_compatibility(reqs, device).failures]
    alone = [
        text
        for text in reqs.to_strings()
        if not evaluate_compatibility(parse_requirements([text]), device).compatible
    ]
    assert failed == alone
