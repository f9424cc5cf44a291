"""Which blobs a device may read, against a real server and signed device requests: exactly
those its desired state names (its release, staged or installed, and after a rollback the
re-assigned one); any other blob is a 404 like a blob that does not exist. Operators read
every release file. (Workload releases and migration archives: test_workloads.py.)"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess
from tests.device_requests import RawDevice
from tests.releases import Trust, fine_tuned, free_port, publish

MISSING = "0" * 64


@pytest.fixture(scope="module")
def models(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The model file's sha256 of releases scope@1.0.0 and scope@2.0.0."""
    workdir: Path = tmp_path_factory.mktemp("releases")
    base = build_mlp(4, 8, 3, seed=3)
    out = {}
    with server.client() as admin:
        trust = Trust.install(admin)
        for version, model in (("1.0.0", base), ("2.0.0", fine_tuned(base, 0.01, seed=4))):
            publish(admin, workdir, "scope", version, model, free_port(), trust.targets_keys)
            out[version] = admin.get_artifact("scope-model", version)["sha256"]
    return out


def device(server: ServerProcess, admin: FleetClient, name: str) -> RawDevice:
    raw = RawDevice(server.url)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    assert raw.enroll(token, name=name).status_code == 200
    return raw


def refused_as_missing(answer: httpx.Response, sha256: str) -> bool:
    if answer.status_code != 404:
        return False
    error = answer.json()["error"]
    return (error["code"], error["message"]) == ("blob_not_found", f"no blob {sha256}")


def test_a_device_reads_only_the_blobs_of_the_release_it_is_given(
    server: ServerProcess, admin: FleetClient, models: dict[str, str]
) -> None:
    given, other = device(server, admin, "scope-given"), device(server, admin, "scope-other")
    admin.assign_release("scope", "1.0.0", device=given.id, stage_only=True)
    v1, v2 = models["1.0.0"], models["2.0.0"]

    assert given.call("GET", f"/v1/blobs/{v1}").status_code == 200  # staged counts
    for target in (f"/v1/blobs/{v1}", f"/v1/blobs/{v2}/delta/{v1}"):
        assert refused_as_missing(other.call("GET", target), v1 if "delta" not in target else v2)
    assert other.call("HEAD", f"/v1/blobs/{v1}").status_code == 404
    # Indistinguishable from a blob that does not exist.
    assert refused_as_missing(other.call("GET", f"/v1/blobs/{MISSING}"), MISSING)
    assert refused_as_missing(given.call("GET", f"/v1/blobs/{v2}"), v2)

    # A new assignment moves the scope; a rollback re-assigns the old release, and with it
    # its files. The delta to the new version is offered from the version the device runs.
    admin.assign_release("scope", "2.0.0", device=given.id)
    assert given.call("GET", f"/v1/blobs/{v2}").status_code == 200
    delta = given.call("GET", f"/v1/blobs/{v2}/delta/{v1}")
    assert delta.status_code == 202 or delta.status_code == 200  # being computed, or ready
    assert refused_as_missing(given.call("GET", f"/v1/blobs/{v1}"), v1)
    admin.assign_release("scope", "1.0.0", device=given.id)
    assert given.call("GET", f"/v1/blobs/{v1}").status_code == 200

    admin.assign_release("scope", "1.0.0", device=other.id)
    assert other.call("GET", f"/v1/blobs/{v1}").status_code == 200


def test_operators_read_every_release_file(
    server: ServerProcess, admin: FleetClient, models: dict[str, str]
) -> None:
    viewer = admin.create_api_token("blob-viewer", "viewer")["token"]
    for sha256 in models.values():
        answer = httpx.get(f"{server.url}/v1/blobs/{sha256}",
                           headers={"authorization": f"Bearer {viewer}"})  # fmt: skip
        assert answer.status_code == 200
