"""The install helper's child process: it verifies exactly what the in-process check verifies,
applies deltas, pins roots; and every way it can fail (cannot start, crashes, overruns,
answers nonsense or names files it should not) fails closed."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from edgefleet.agent.install_helper import (
    ChildProcessHelper,
    InProcessHelper,
    InstallHelper,
    InstallHelperFailed,
)
from edgefleet.agent.release_verification import ReleaseRefused, VerifiedFile, VerifyRequest
from edgefleet.artifacts.delta import create_delta
from edgefleet.errors import ApiError, Conflict, EdgefleetError, InvalidInput, Unavailable
from tests.unit.test_tuf import DEVICE, World

HELPERS: dict[str, Callable[[], InstallHelper]] = {
    "child": ChildProcessHelper,
    "in-process": InProcessHelper,
}


def served(world: World) -> Callable[[str], Coroutine[Any, Any, bytes]]:
    """The world's metadata as the agent's link would fetch it."""

    async def fetch(url: str) -> bytes:
        data = world.fetch(url)
        return data if isinstance(data, bytes) else b"".join(data)

    return fetch


def verify(helper: InstallHelper, world: World, *paths: str, device: str = "device",
           version: str = "1.0.0", inventory: dict[str, Any] | None = None,
           fetch: Callable[[str], Coroutine[Any, Any, bytes]] | None = None,
           ) -> list[VerifiedFile]:  # fmt: skip
    request = VerifyRequest(world.tmp / device, "vision", version, paths,
                            DEVICE if inventory is None else inventory)  # fmt: skip
    return asyncio.run(helper.verify_release(request, fetch or served(world)))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.mark.parametrize("kind", sorted(HELPERS))
def test_both_helpers_verify_the_same_facts_and_refuse_the_same_releases(
    world: World, kind: str
) -> None:
    helper = HELPERS[kind]()
    target = world.release("1.0.0", b"model v1")
    [file] = verify(helper, world, target.path)
    assert (file.path, file.sha256, file.file_name, file.artifact_name) == (
        target.path, target.sha256, "model.onnx", "detector")  # fmt: skip
    with pytest.raises(ReleaseRefused, match="belongs to another release"):
        verify(helper, world, target.path, version="2.0.0")
    with pytest.raises(ReleaseRefused, match="incompatible: detector"):
        verify(helper, world, target.path, inventory={"hardware": {"arch": "x86_64"}})
    with pytest.raises(ReleaseRefused, match="release metadata refused: no signed target"):
        verify(helper, world, "releases/vision/1.0.0/other.onnx")


@pytest.mark.parametrize("kind", sorted(HELPERS))
def test_metadata_the_agent_cannot_fetch_is_unavailable_not_refused(
    world: World, kind: str
) -> None:
    target = world.release("1.0.0", b"model v1")

    async def down(url: str) -> bytes:
        raise Unavailable("control plane unreachable")

    with pytest.raises(Unavailable):
        verify(HELPERS[kind](), world, target.path, fetch=down)


def test_the_child_pins_on_first_use_and_its_warning_reaches_the_agent_log(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    target = world.release("1.0.0", b"model v1")
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return await served(world)(url)

    with caplog.at_level(logging.WARNING):
        [file] = verify(ChildProcessHelper(), world, target.path, device="fresh", fetch=fetch)
    assert file.path == target.path and fetched[0] == "/v1/tuf/1.root.json"
    assert "trust on first use" in caplog.text
    assert (world.tmp / "fresh" / "enrollment_root.json").exists()


def test_the_child_pins_a_root_once_and_refuses_another(world: World, tmp_path: Path) -> None:
    helper = ChildProcessHelper()
    root = world.repo.root_bytes()
    asyncio.run(helper.pin_root(tmp_path / "pinned", root))
    asyncio.run(helper.pin_root(tmp_path / "pinned", root))  # the same root again: fine
    with pytest.raises(Conflict):
        asyncio.run(helper.pin_root(tmp_path / "pinned", World(tmp_path / "w2").repo.root_bytes()))
    with pytest.raises(InvalidInput):
        asyncio.run(helper.pin_root(tmp_path / "other", b"{}"))


def test_the_child_applies_a_delta_and_refuses_the_wrong_target(tmp_path: Path) -> None:
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(bytes(range(256)) * 4000)
    new.write_bytes(bytes(range(256)) * 3000 + b"a change" + bytes(range(256)) * 1000)
    create_delta(old, new, tmp_path / "patch")
    import hashlib

    expected = hashlib.sha256(new.read_bytes()).hexdigest()
    helper = ChildProcessHelper()
    asyncio.run(helper.apply_delta(old, tmp_path / "patch", tmp_path / "out", expected))
    assert (tmp_path / "out").read_bytes() == new.read_bytes()
    with pytest.raises(InvalidInput) as refused:
        asyncio.run(helper.apply_delta(old, tmp_path / "patch", tmp_path / "out2", "0" * 64))
    assert refused.value.code == "delta_target_mismatch"
    assert not (tmp_path / "out2").exists()


# --- failing closed ----------------------------------------------------------------------

PATH = "releases/vision/1.0.0/model.onnx"
GOOD = {
    "path": PATH,
    "length_bytes": 8,
    "hashes": {"sha256": "a" * 64},
    "artifact_name": "detector",
    "artifact_kind": "onnx-model",
    "file_name": "model.onnx",
}
FAKE_CHILDREN = {
    "crash": ("import sys; sys.stderr.write('Traceback: boom\\n'); sys.exit(3)",
              "exited with exit code 3: Traceback: boom"),
    "killed": ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
               "exited with signal SIGKILL"),
    "garbage": ("print('hello, agent')", "answered nonsense: not JSON"),
    "silent": ("pass", "exited without an answer"),
    "hangs": ("import time; time.sleep(60)", "timed out after 1 s"),
    "unknown message": ("print('{\"please\": 1}')", "unknown message 'please'"),
    "escaping file name": (
        f"import json; print(json.dumps({{'result': [{{**{GOOD!r}, 'file_name': '../x'}}]}}))",
        "answered nonsense: invalid file name",
    ),
    "wrong path": (
        f"import json; print(json.dumps({{'result': [{{**{GOOD!r}, 'path': 'releases/x'}}]}}))",
        "answered nonsense: no verified facts",
    ),
    "result then failure": (
        f"import json, sys; print(json.dumps({{'result': [{GOOD!r}]}}), flush=True); sys.exit(1)",
        "exited with exit code 1",
    ),
    "fetch outside tuf": ("print('{\"fetch\": \"/v1/devices/d-x/desired\"}')",
                          "answered nonsense: asked to fetch"),
    "unknown error type": ("print('{\"error\": {\"type\": \"Boom\", \"code\": \"x\", "
                           "\"message\": \"y\"}}')", "answered nonsense: unknown error type"),
}  # fmt: skip


def fake_python(tmp_path: Path, code: str) -> str:
    """An executable standing in for `python -m edgefleet.agent.install_child`."""
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\n{code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.parametrize("case", sorted(FAKE_CHILDREN))
def test_a_child_that_fails_refuses_the_release(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    code, reason = FAKE_CHILDREN[case]
    helper = ChildProcessHelper(python=fake_python(tmp_path, code), verify_timeout_s=1)
    request = VerifyRequest(tmp_path / "tuf", "vision", "1.0.0", (PATH,))

    async def fetch(url: str) -> bytes:
        return b"{}"

    with caplog.at_level(logging.WARNING), pytest.raises(ReleaseRefused) as refused:
        asyncio.run(helper.verify_release(request, fetch))
    assert refused.value.message.startswith("release verification failed: ")
    assert reason in refused.value.message
    assert "install helper failed" in caplog.text


def test_a_child_that_cannot_start_refuses_the_release(tmp_path: Path) -> None:
    helper = ChildProcessHelper(python=str(tmp_path / "no-such-python"))
    request = VerifyRequest(tmp_path / "tuf", "vision", "1.0.0", (PATH,))

    async def fetch(url: str) -> bytes:
        return b""

    with pytest.raises(ReleaseRefused, match="could not start"):
        asyncio.run(helper.verify_release(request, fetch))


def test_a_failed_delta_child_is_an_error_the_delivery_falls_back_on(tmp_path: Path) -> None:
    helper = ChildProcessHelper(python=fake_python(tmp_path, "import sys; sys.exit(2)"))
    with pytest.raises(InstallHelperFailed) as failed:
        asyncio.run(helper.apply_delta(tmp_path / "a", tmp_path / "b", tmp_path / "c", "0" * 64))
    assert isinstance(failed.value, EdgefleetError)


def test_a_failed_pin_is_retried_as_unavailable(tmp_path: Path) -> None:
    helper = ChildProcessHelper(python=fake_python(tmp_path, "import sys; sys.exit(2)"))
    with pytest.raises(Unavailable, match="could not pin"):
        asyncio.run(helper.pin_root(tmp_path / "tuf", b"{}"))


def test_errors_of_the_link_cross_to_the_child_and_back(world: World) -> None:
    target = world.release("1.0.0", b"model v1")

    async def forbidden(url: str) -> bytes:
        raise ApiError(403, "device_revoked", "this device is revoked")

    # python-tuf sees the status (as in process) and the agent gets a fetch failure back.
    with pytest.raises(Unavailable, match="could not be fetched: this device is revoked"):
        verify(ChildProcessHelper(), world, target.path, fetch=forbidden)


@pytest.mark.parametrize("kind", sorted(HELPERS))
def test_both_helpers_read_a_service_manifest_and_refuse_the_same_bad_ones(
    kind: str, tmp_path: Path
) -> None:
    helper = HELPERS[kind]()
    manifest = tmp_path / "service.yaml"
    manifest.write_text("command: ['{python}', '-m', 'app']\nport: auto\n")
    assert asyncio.run(helper.read_manifest(manifest)) == {
        "command": ["{python}", "-m", "app"],
        "port": "auto",
    }
    for text, reason in (
        ("command: [unclosed\n", "not YAML"),
        ("port: 80\n", "field required"),
        ("command: [x]\n# " + "x" * 70_000 + "\n", "over 65536 bytes"),
    ):
        manifest.write_text(text)
        with pytest.raises(InvalidInput, match=reason):
            asyncio.run(helper.read_manifest(manifest))


def test_a_failed_manifest_child_refuses_the_manifest(tmp_path: Path) -> None:
    helper = ChildProcessHelper(python=fake_python(tmp_path, "import sys; sys.exit(2)"))
    with pytest.raises(InvalidInput, match="service manifest unread"):
        asyncio.run(helper.read_manifest(tmp_path / "service.yaml"))


def test_a_release_fetched_before_manifests_were_kept_gets_its_manifest_recorded(
    tmp_path: Path,
) -> None:
    """release.json written by an earlier agent has no `service`: it is read once, kept."""
    from edgefleet.agent.workload_artifacts import RELEASE_FILE, ReleaseCache
    from edgefleet.clock import SystemClock

    cache = ReleaseCache(tmp_path, tmp_path / "tuf", None, SystemClock(),  # type: ignore[arg-type]
                         dict, dict, InProcessHelper())  # fmt: skip
    directory = tmp_path / "releases" / "vision@1.0.0"
    directory.mkdir(parents=True)
    (directory / "service.yaml").write_text("command: ['{python}', '-m', 'app']\n")
    (directory / RELEASE_FILE).write_text(json.dumps({
        "name": "vision", "version": "1.0.0", "files": {"svc": "service.yaml"},
        "kinds": {"svc": "service"}, "sha256": {}}))  # fmt: skip
    release = asyncio.run(cache.ensure({"name": "vision", "version": "1.0.0", "targets": []}))
    assert release.service == {"command": ["{python}", "-m", "app"]}
    assert json.loads((directory / RELEASE_FILE).read_text())["service"] == release.service
    assert cache.find("vision", "1.0.0") == release
