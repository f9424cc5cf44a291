"""The agent's side of federated training: one short-lived child per round it is planned in.

The desired state's `training` section lists the rounds (job, number) the device is planned
in. For each one not yet taken up, `TrainingRunner` starts `training_child` (the protocol is
in that module), relays its requests over the agent's signed link (only to this device's
routes of that round and job) and logs how the round went. An agent restarted mid-round
does not rejoin it: its secrets died with the child, and the round goes on without it.
Nothing of training is imported or kept while the device is not in a round.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edgefleet.agent.child_channel import (
    EXIT_GRACE_S,
    MAX_MESSAGE_BYTES,
    child_environment,
    error_to_wire,
    send,
    stderr_tail,
)
from edgefleet.errors import EdgefleetError

log = logging.getLogger(__name__)

MODULE = "edgefleet.agent.training_child"
ROUND_TIMEOUT_S = 3600.0
KEPT_ROUNDS = 64

Request = Callable[[str, str, bytes], Awaitable[bytes]]  # the link's signed exchange


class TrainingRunner:
    def __init__(self, device_id: Callable[[], str], request: Request, cache_dir: Path,
                 poll_s: float = 1.0, python: str = sys.executable) -> None:  # fmt: skip
        self._device_id = device_id
        self._request = request
        self._cache_dir = cache_dir
        self._poll_s = poll_s
        self._python = python
        self._taken: list[tuple[str, int]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def want(self, section: dict[str, Any] | None) -> None:
        """Take up every round of `section` not yet taken up (call inside the event loop)."""
        for entry in (section or {}).get("rounds", []):
            key = (str(entry.get("job")), int(entry.get("round", 0)))
            if key in self._taken:
                continue
            self._taken = [*self._taken, key][-KEPT_ROUNDS:]
            task = asyncio.get_running_loop().create_task(self._run(*key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, job: str, number: int) -> None:
        device_id = self._device_id()
        allowed = re.compile(
            rf"/v1/devices/{re.escape(device_id)}/training/{re.escape(job)}/"
            rf"(rounds/{number}|model\?have=[0-9a-f]{{0,64}}&want=[0-9a-f]{{64}})"
        )
        args = {"device_id": device_id, "job": job, "round": number,
                "cache_dir": str(self._cache_dir), "poll_s": self._poll_s}  # fmt: skip
        extra = {"training_job": job, "round": number}
        try:
            process = await asyncio.create_subprocess_exec(
                self._python, "-m", MODULE, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=child_environment(), start_new_session=True, limit=MAX_MESSAGE_BYTES,
            )  # fmt: skip
        except OSError as e:
            log.warning("training child could not start", extra={**extra, "reason": str(e)})
            return
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        stderr = asyncio.ensure_future(stderr_tail(process.stderr))
        answer: dict[str, Any] | None = None
        try:
            answer = await asyncio.wait_for(self._converse(process, args, allowed), ROUND_TIMEOUT_S)
            await asyncio.wait_for(process.wait(), EXIT_GRACE_S)
        except (TimeoutError, ValueError, BrokenPipeError, ConnectionResetError) as e:
            log.warning("training child failed", extra={**extra, "reason": repr(e)})
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            output = await stderr
        if answer is None or "result" not in answer:
            log.warning("training round ended without a result",
                        extra={**extra, "answer": answer, "stderr": output[-2000:]})  # fmt: skip
        else:
            log.info("training round done", extra={**extra, **answer["result"]})

    async def _converse(self, process: asyncio.subprocess.Process, args: dict[str, Any],
                        allowed: re.Pattern[str]) -> dict[str, Any] | None:  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        await send(process.stdin, {"job": "train_round", "args": args})
        while True:
            line = await process.stdout.readline()
            if not line:
                return None
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("training child: not a message")
            if "request" not in message:
                process.stdin.close()
                return message
            await send(process.stdin, await self._relay(message["request"], allowed))

    async def _relay(self, request: Any, allowed: re.Pattern[str]) -> dict[str, Any]:
        if not isinstance(request, dict) or request.get("method") not in ("GET", "POST"):
            raise ValueError("training child: malformed request")
        target = str(request.get("target"))
        if not allowed.fullmatch(target):
            raise ValueError(f"training child: may not ask for {target[:80]!r}")
        body = base64.b64decode(str(request.get("body", "")), validate=True)
        try:
            return {"body": base64.b64encode(
                await self._request(request["method"], target, body)).decode()}  # fmt: skip
        except EdgefleetError as e:
            return {"error": error_to_wire(e)}
