"""The install helper: the heavy part of an install, kept out of the long-running agent.

Verifying release metadata needs python-tuf, securesystemslib and cryptography; applying a
delta needs numpy. Imported into the agent they would stay for good: an agent that had
installed a release idled about 24 MB above one that had not (65 against 41 MB,
`bench/agent/idle.py`). `InstallHelper` is the port the installer, the workload release
cache and delivery call:

    verify_release(request, fetch)   release_verification.check_release: signed facts of
                                     every file, or ReleaseRefused / Unavailable / ApiError
    apply_delta(base, delta, out, expected_sha256)   artifacts.delta.apply_delta
    pin_root(tuf_dir, root, pinned=, rotations=)   keep the root received at enrollment as
                                     the anchor, once it is checked against the root pinned
                                     out of band (`TufClient.enrollment_anchor`)
    read_manifest(path)              a service manifest (PyYAML), validated; InvalidInput

`ChildProcessHelper` (the real agent's) runs each job in a short-lived child,
`python -m edgefleet.agent.install_child` (the protocol is in that module); TUF metadata
the child asks for travels over the agent's signed link, restricted to `/v1/tuf/` paths.
The agent trusts only the child's structured answer and exit code: a child that cannot
start, crashes, overruns its timeout or answers anything malformed has failed, and the
job's caller treats that as it treats a refusal — a release is refused (fail closed, never
installed unverified), a delta falls back to the full download, which the agent checks
against the signed hashes itself. The child's stderr goes to the agent's log when it
fails.

`InProcessHelper` runs the same jobs in the calling process, on worker threads. It is for
the simulator, which runs hundreds of virtual agents in one process that holds python-tuf
anyway, where a child per virtual install would cost about 0.2 s of CPU each.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from edgefleet.agent.child_channel import (
    EXIT_GRACE_S,
    MAX_MESSAGE_BYTES,
    child_environment,
    error_from_wire,
    error_to_wire,
    send,
    stderr_tail,
)
from edgefleet.agent.install_child import MODULE, read_service_manifest
from edgefleet.agent.release_verification import (
    METADATA_FETCH_TIMEOUT_S,
    MetadataFetch,
    ReleaseRefused,
    VerifiedFile,
    VerifyRequest,
    check_release,
)
from edgefleet.core.updates.restart_policy import describe_exit
from edgefleet.errors import EdgefleetError, InvalidInput, Unavailable

log = logging.getLogger(__name__)


VERIFY_TIMEOUT_S = 600.0
DELTA_TIMEOUT_S = 900.0
PIN_TIMEOUT_S = 60.0
MANIFEST_TIMEOUT_S = 60.0
_METADATA_URL_RE = re.compile(r"/v1/tuf/[A-Za-z0-9][A-Za-z0-9._-]*")


class InstallHelperFailed(EdgefleetError):
    """The helper did not finish its job (could not start, crashed, timed out, or answered
    nonsense); the job's caller decides what that means."""

    code = "install_helper_failed"


class InstallHelper(Protocol):
    async def verify_release(
        self, request: VerifyRequest, fetch: MetadataFetch
    ) -> list[VerifiedFile]: ...

    async def apply_delta(
        self, base: Path, delta: Path, out: Path, expected_sha256: str
    ) -> None: ...

    async def pin_root(
        self,
        tuf_dir: Path,
        root: bytes | None,
        *,
        pinned: bytes | None = None,
        rotations: Sequence[bytes] = (),
    ) -> None: ...

    async def read_manifest(self, path: Path) -> dict[str, Any]: ...


class ChildProcessHelper:
    """Each job in its own short-lived child process (the real agent's helper)."""

    def __init__(
        self,
        *,
        python: str = sys.executable,
        verify_timeout_s: float = VERIFY_TIMEOUT_S,
        delta_timeout_s: float = DELTA_TIMEOUT_S,
    ) -> None:
        self._python = python
        self._verify_timeout_s = verify_timeout_s
        self._delta_timeout_s = delta_timeout_s

    async def verify_release(
        self, request: VerifyRequest, fetch: MetadataFetch
    ) -> list[VerifiedFile]:
        try:
            result = await self._run("verify_release", request.to_wire(),
                                     self._verify_timeout_s, fetch)  # fmt: skip
            try:
                if not isinstance(result, list) or len(result) != len(request.paths):
                    raise InvalidInput("not one answer per file")
                pairs = zip(result, request.paths, strict=True)
                return [VerifiedFile.from_wire(raw, path) for raw, path in pairs]
            except InvalidInput as e:
                log.warning(
                    "install helper failed",
                    extra={"job": "verify_release", "reason": f"answered nonsense: {e.message}"},
                )
                raise InstallHelperFailed(
                    f"the install helper answered nonsense: {e.message}"
                ) from None
        except InstallHelperFailed as e:
            raise ReleaseRefused(f"release verification failed: {e.message}") from None

    async def apply_delta(self, base: Path, delta: Path, out: Path, expected_sha256: str) -> None:
        args = {"base": str(base), "delta": str(delta), "out": str(out),
                "expected_sha256": expected_sha256}  # fmt: skip
        await self._run("apply_delta", args, self._delta_timeout_s)

    async def pin_root(
        self,
        tuf_dir: Path,
        root: bytes | None,
        *,
        pinned: bytes | None = None,
        rotations: Sequence[bytes] = (),
    ) -> None:
        args = {"tuf_dir": str(tuf_dir), "root": _b64(root), "pinned": _b64(pinned),
                "rotations": [_b64(r) for r in rotations]}  # fmt: skip
        try:
            await self._run("pin_root", args, PIN_TIMEOUT_S)
        except InstallHelperFailed as e:
            # Nothing was pinned; enrolling again (idempotent) pins it.
            raise Unavailable(f"could not pin the fleet's root: {e.message}",
                              code=e.code) from None  # fmt: skip

    async def read_manifest(self, path: Path) -> dict[str, Any]:
        try:
            result = await self._run("read_manifest", {"path": str(path)}, MANIFEST_TIMEOUT_S)
        except InstallHelperFailed as e:
            raise InvalidInput(f"service manifest unread: {e.message}") from None
        if not isinstance(result, dict):
            raise InvalidInput("service manifest unread: the install helper answered nonsense")
        return result

    async def _run(
        self, job: str, args: dict[str, Any], timeout_s: float, fetch: MetadataFetch | None = None
    ) -> Any:
        """The child's result; its error raised again; InstallHelperFailed otherwise."""
        try:
            process = await asyncio.create_subprocess_exec(
                self._python, "-m", MODULE,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=child_environment(), start_new_session=True,
                limit=MAX_MESSAGE_BYTES,
            )  # fmt: skip
        except OSError as e:
            raise InstallHelperFailed(f"the install helper could not start: {e}") from None
        assert process.stderr is not None
        stderr = asyncio.ensure_future(stderr_tail(process.stderr))
        answer: dict[str, Any] | None = None
        failure = ""
        try:
            answer = await asyncio.wait_for(self._converse(process, job, args, fetch), timeout_s)
            exit_code = await asyncio.wait_for(process.wait(), EXIT_GRACE_S)
            if exit_code != 0:
                failure = f"exited with {describe_exit(exit_code)}"
            elif answer is None:
                failure = "exited without an answer"
        except TimeoutError:
            failure = f"timed out after {timeout_s:g} s"
        except _Nonsense as e:
            failure = f"answered nonsense: {e}"
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            output = await stderr
        error: EdgefleetError | None = None
        if not failure and answer is not None and "error" in answer:
            try:
                error = error_from_wire(answer["error"])
            except ValueError as e:
                failure = f"answered nonsense: {e}"
        if failure or answer is None:
            lines = [line for line in output.splitlines() if line.strip()]
            log.warning("install helper failed", extra={
                "job": job, "reason": failure, "stderr": output[-2000:]})  # fmt: skip
            last = f": {lines[-1][:200]}" if lines else ""
            raise InstallHelperFailed(f"the install helper {failure}{last}")
        if output.strip():
            log.debug("install helper said", extra={"job": job, "stderr": output[-2000:]})
        if error is not None:
            raise error
        return answer["result"]

    async def _converse(
        self,
        process: asyncio.subprocess.Process,
        job: str,
        args: dict[str, Any],
        fetch: MetadataFetch | None,
    ) -> dict[str, Any] | None:
        """Send the job, serve the child's fetches, return its last message (None when it
        exits without one)."""
        assert process.stdin is not None and process.stdout is not None
        try:
            await send(process.stdin, {"job": job, "args": args})
            while True:
                try:
                    line = await process.stdout.readline()
                except ValueError:  # over MAX_MESSAGE_BYTES
                    raise _Nonsense("a line too long") from None
                if not line:
                    return None
                message = _parse(line)
                if "fetch" in message:
                    await send(process.stdin, await _serve_fetch(message["fetch"], fetch))
                elif "warning" in message:
                    log.warning(str(message["warning"])[:500], extra={"job": job})
                else:
                    process.stdin.close()
                    return message
        except (BrokenPipeError, ConnectionResetError):
            return None  # the child is gone; its exit code tells why


class InProcessHelper:
    """The same jobs in this process, on worker threads (the simulator's helper: see the
    module docstring)."""

    async def verify_release(
        self, request: VerifyRequest, fetch: MetadataFetch
    ) -> list[VerifiedFile]:
        loop = asyncio.get_running_loop()

        def fetch_now(url: str) -> bytes:
            future = asyncio.run_coroutine_threadsafe(fetch(url), loop)
            try:
                return future.result(METADATA_FETCH_TIMEOUT_S)
            except TimeoutError:
                future.cancel()
                raise Unavailable(f"{url}: no answer within {METADATA_FETCH_TIMEOUT_S} s",
                                  code="tuf_fetch_failed") from None  # fmt: skip

        return await asyncio.to_thread(check_release, request, fetch_now, _warn)

    async def apply_delta(self, base: Path, delta: Path, out: Path, expected_sha256: str) -> None:
        from edgefleet.artifacts.delta import apply_delta

        await asyncio.to_thread(apply_delta, base, delta, out, expected_sha256=expected_sha256)

    async def pin_root(
        self,
        tuf_dir: Path,
        root: bytes | None,
        *,
        pinned: bytes | None = None,
        rotations: Sequence[bytes] = (),
    ) -> None:
        from edgefleet.security.tuf_client import TufClient

        anchor = TufClient.enrollment_anchor(root, pinned, rotations)
        TufClient.store_enrollment_root(tuf_dir, anchor)

    async def read_manifest(self, path: Path) -> dict[str, Any]:
        return await asyncio.to_thread(read_service_manifest, path)


class _Nonsense(Exception):
    """The child broke the protocol."""


def _warn(message: str) -> None:
    log.warning(message)


def _parse(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        raise _Nonsense(f"not JSON: {line[:80]!r}") from None
    if not isinstance(message, dict) or len(message) != 1:
        raise _Nonsense(f"not a message: {line[:80]!r}")
    if not message.keys() <= {"fetch", "warning", "result", "error"}:
        raise _Nonsense(f"unknown message {next(iter(message))!r}")
    return message


async def _serve_fetch(url: object, fetch: MetadataFetch | None) -> dict[str, Any]:
    """One metadata file for the child: only TUF paths, over the agent's signed link."""
    if fetch is None or not isinstance(url, str) or not _METADATA_URL_RE.fullmatch(url):
        raise _Nonsense(f"asked to fetch {str(url)[:80]!r}")
    try:
        body = await asyncio.wait_for(fetch(url), METADATA_FETCH_TIMEOUT_S)
    except TimeoutError:
        error: EdgefleetError = Unavailable(
            f"{url}: no answer within {METADATA_FETCH_TIMEOUT_S} s", code="tuf_fetch_failed"
        )
        return {"error": error_to_wire(error)}
    except EdgefleetError as e:
        return {"error": error_to_wire(e)}
    return {"body": base64.b64encode(body).decode()}


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()
