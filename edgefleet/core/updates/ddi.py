"""hawkBit's Direct Device Integration (DDI) API in edgefleet's own terms.

A DDI *target* is an edgefleet device, a *distribution set* a release, a *software module*
one artifact of it, and an *action* a release assignment: its `serial` is the action id.
This module holds the pure mappings the DDI routes need:

- which action a target should act on (`open_action`), which one it is asked to cancel
  (`cancel_action`), which one it runs (`installed_action`);
- how an action is to be handled (`handling`: `download` / `update` as `forced`, `attempt`
  or `skip`, and the `maintenanceWindow`);
- what a feedback message says (`parse_feedback`) and what it makes of the device's release
  status (`status_after_feedback`, `status_after_cancel`), in the install states an agent
  reports (`core/install.py`), so rollout gates read both kinds of device alike;
- configData onto labels (`labels_after_config`), and which releases DDI devices may get
  (`ddi_refusal`).

The action a target sees, from its assignment A and its reported status S:

    S names another action, still running ──▶ cancelAction/S (until the cancel is
                                               answered), then nothing until S ends
    S is A, final (or staged, download-only) ─▶ nothing to do
    otherwise ────────────────────────────────▶ deploymentBase/A

>>> from edgefleet.core.updates.release import ReleaseAssignment
>>> a = ReleaseAssignment("os", "2.0.0", stage_only=False, serial=3)
>>> open_action(a, {}), cancel_action(a, {})
(3, None)
>>> running = {"name": "os", "version": "1.0.0", "serial": 2, "state": "downloading"}
>>> open_action(a, running), cancel_action(a, running)
(None, 2)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edgefleet.core.device import Device
from edgefleet.core.labels import validate_labels
from edgefleet.core.updates.install import InstallState
from edgefleet.core.updates.release import ReleaseAssignment
from edgefleet.errors import InvalidInput

# A DDI device has no key of its own: its `public_key` column holds this prefix and its id,
# which no Ed25519 key decodes to, so a signed request in its name never verifies.
DDI_KEY_PREFIX = "ddi:"
MAX_DETAILS_CHARS = 500

_CONTROLLER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_FINAL = frozenset({InstallState.INSTALLED, InstallState.FAILED, InstallState.ROLLED_BACK})


class Execution(StrEnum):
    """`status.execution` of a feedback message."""

    PROCEEDING = "proceeding"
    SCHEDULED = "scheduled"
    RESUMED = "resumed"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    CANCELED = "canceled"
    REJECTED = "rejected"
    CLOSED = "closed"


class Finished(StrEnum):
    """`status.result.finished` of a feedback message."""

    SUCCESS = "success"
    FAILURE = "failure"
    NONE = "none"


class Handling(StrEnum):
    """`deployment.download` and `deployment.update`."""

    FORCED = "forced"
    ATTEMPT = "attempt"
    SKIP = "skip"


class WindowStatus(StrEnum):
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"


class ConfigMode(StrEnum):
    MERGE = "merge"
    REPLACE = "replace"
    REMOVE = "remove"


def validate_controller_id(controller_id: str) -> str:
    """A controller id: letters, digits, '.', '_', ':', '-', at most 64, starting with a
    letter or digit (it is also the device's name)."""
    if not _CONTROLLER_ID_RE.fullmatch(controller_id):
        raise InvalidInput(
            f"invalid controller id {controller_id!r}: use letters, digits, '.', '_', ':' and "
            "'-' (at most 64, starting with a letter or digit)",
            code="invalid_controller_id",
        )
    return controller_id


def is_ddi_device(device: Device) -> bool:
    return device.public_key.startswith(DDI_KEY_PREFIX)


def ddi_refusal(device: Device, release_name: str, allowed: frozenset[str]) -> str | None:
    """Why `device` may not be assigned release `release_name`, or None. Only DDI devices
    are restricted: they check hashes over TLS, not the signed TUF metadata, so they get
    only the releases operators listed for them.

    >>> from datetime import UTC, datetime
    >>> from edgefleet.core.enrollment import EnrollmentState
    >>> d = Device("d-1", "gw", "ddi:d-1", EnrollmentState.APPROVED, {}, {}, None,
    ...            datetime(2026, 1, 1, tzinfo=UTC))
    >>> ddi_refusal(d, "os", frozenset({"os"})) is None
    True
    >>> ddi_refusal(d, "vision", frozenset({"os"}))[:44]
    'release vision is not allowed for DDI device'
    """
    if not is_ddi_device(device) or release_name in allowed:
        return None
    listed = ", ".join(sorted(allowed)) or "none"
    return (
        f"release {release_name} is not allowed for DDI devices (they verify hashes over TLS, "
        f"not TUF signatures); allowed: {listed} (EDGEFLEET_DDI_RELEASES)"
    )


def polling_sleep(interval_s: float) -> str:
    """`config.polling.sleep`: the interval as HH:MM:SS, at least one second.

    >>> polling_sleep(15), polling_sleep(3725.4), polling_sleep(0.2)
    ('00:00:15', '01:02:05', '00:00:01')
    """
    total = max(1, round(interval_s))
    hours, rest = divmod(total, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


# Actions.


def _state(status: Mapping[str, Any]) -> InstallState | None:
    try:
        return InstallState(str(status.get("state")))
    except ValueError:
        return None


def _running(status: Mapping[str, Any]) -> int | None:
    """The action the device reported working on and has not ended, if any."""
    serial = status.get("serial")
    state = _state(status)
    if not isinstance(serial, int) or state is None or state in _FINAL:
        return None
    return serial


def cancel_action(assignment: ReleaseAssignment | None, status: Mapping[str, Any]) -> int | None:
    """The action the device is asked to cancel: one it is still working on that is no longer
    its assignment (re-assigned, rolled back, or taken away), until it answers the cancel."""
    running = _running(status)
    if running is None or (assignment is not None and assignment.serial == running):
        return None
    if status.get("cancel_rejected") == running:
        return None
    return running


def open_action(assignment: ReleaseAssignment | None, status: Mapping[str, Any]) -> int | None:
    """The action the device should act on (`deploymentBase`), or None."""
    if assignment is None:
        return None
    running = _running(status)
    if running is not None and running != assignment.serial:
        return None  # first the old action ends: cancelled, or finished after a refusal
    if status.get("serial") == assignment.serial:
        state = _state(status)
        if state in _FINAL:
            return None
        if assignment.stage_only and state is InstallState.STAGED:
            return None  # delivered; installs once an operator activates it
    return assignment.serial


def installed_action(status: Mapping[str, Any]) -> int | None:
    """The action whose release the device runs, when it reported one installed."""
    serial = status.get("serial")
    if isinstance(serial, int) and _state(status) is InstallState.INSTALLED:
        return serial
    return None


def feedback_allowed(
    action_id: int, assignment: ReleaseAssignment | None, status: Mapping[str, Any]
) -> bool:
    """Whether deployment feedback about `action_id` is about an action the device has: its
    assignment, or one it is still working on after refusing to cancel it."""
    return (assignment is not None and assignment.serial == action_id) or (
        _running(status) == action_id
    )


def action_closed(action_id: int, status: Mapping[str, Any]) -> bool:
    """Whether the device reported action `action_id` ended (installed or failed): later
    feedback on it is refused."""
    return status.get("serial") == action_id and _state(status) in _FINAL


def applied_after_poll(
    assignment: ReleaseAssignment | None,
    status: Mapping[str, Any],
    desired_generation: int,
    applied_generation: int,
) -> int:
    """A DDI device has applied its desired state once it has nothing left to do or cancel:
    a poll then records the desired generation as applied."""
    if open_action(assignment, status) is None and cancel_action(assignment, status) is None:
        return desired_generation
    return applied_generation


@dataclass(frozen=True)
class ActionHandling:
    download: Handling
    update: Handling
    maintenance_window: WindowStatus | None  # None: no window applies


def handling(
    stage_only: bool, by_rollout: bool, past_force_deadline: bool, window_open: bool | None
) -> ActionHandling:
    """How the device is to handle an action. A direct assignment (`devices set-release`)
    is forced; a rollout's is an attempt (the rollout retries and times out on its own)
    until a `force` deadline passes. A download-only (staged) action skips the update, and
    so does one outside its rollout's maintenance window (`window_open` False; None: the
    rollout has none), which hawkBit clients download but do not install.

    >>> handling(False, True, False, False)
    ActionHandling(download=<Handling.FORCED: 'forced'>, update=<Handling.SKIP: 'skip'>, \
maintenance_window=<WindowStatus.UNAVAILABLE: 'unavailable'>)
    """
    forced = not by_rollout or past_force_deadline
    update = Handling.FORCED if forced else Handling.ATTEMPT
    window = None
    if window_open is not None:
        open_now = window_open or past_force_deadline
        window = WindowStatus.AVAILABLE if open_now else WindowStatus.UNAVAILABLE
    if stage_only or window is WindowStatus.UNAVAILABLE:
        update = Handling.SKIP
    return ActionHandling(Handling.FORCED, update, window)


# Feedback.


@dataclass(frozen=True)
class Feedback:
    execution: Execution
    finished: Finished
    details: tuple[str, ...] = ()
    progress: tuple[int, int] | None = None  # (cnt, of)


def _bad(message: str) -> InvalidInput:
    return InvalidInput(f"malformed feedback: {message}", code="invalid_feedback")


def parse_feedback(raw: object, action_id: int | None = None) -> Feedback:
    """A feedback body (`{"id", "time", "status": {"execution", "result": {"finished",
    "progress": {"cnt", "of"}}, "details": [...]}}`); InvalidInput `invalid_feedback`
    naming the field. An `id` must be the action id of the path.

    >>> parse_feedback({"status": {"execution": "closed", "result": {"finished": "success"}}})
    Feedback(execution=<Execution.CLOSED: 'closed'>, finished=<Finished.SUCCESS: 'success'>, \
details=(), progress=None)
    """
    if not isinstance(raw, Mapping):
        raise _bad("the body must be a JSON object")
    if action_id is not None and raw.get("id") not in (None, "", action_id, str(action_id)):
        raise _bad(f"id {raw.get('id')!r} is not the action {action_id} of the path")
    status = raw.get("status")
    if not isinstance(status, Mapping):
        raise _bad("status: required, an object")
    try:
        execution = Execution(str(status.get("execution")))
    except ValueError:
        raise _bad(f"status.execution {status.get('execution')!r} is not one of "
                   f"{', '.join(Execution)}") from None  # fmt: skip
    result = status.get("result", {})
    if not isinstance(result, Mapping):
        raise _bad("status.result must be an object")
    try:
        finished = Finished(str(result.get("finished", Finished.NONE.value)))
    except ValueError:
        raise _bad(f"status.result.finished {result.get('finished')!r} is not one of "
                   f"{', '.join(Finished)}") from None  # fmt: skip
    if execution is Execution.CLOSED and finished is Finished.NONE:
        raise _bad("a closed action needs status.result.finished success or failure")
    details = status.get("details", [])
    if (
        not isinstance(details, Sequence)
        or isinstance(details, str)
        or not all(isinstance(d, str) for d in details)
    ):
        raise _bad("status.details must be a list of strings")
    return Feedback(execution, finished, tuple(details), _progress(result.get("progress")))


def _progress(raw: object) -> tuple[int, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise _bad("status.result.progress must be an object")
    if "cnt" not in raw and "of" not in raw:
        return None  # other clients' fields (such as a percentage) are not ours to read
    cnt, of = raw.get("cnt"), raw.get("of")
    for name, value in (("cnt", cnt), ("of", of)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
            raise _bad(f"status.result.progress.{name} must be a whole number of steps")
    assert isinstance(cnt, int) and isinstance(of, int)
    if cnt > of:
        raise _bad(f"status.result.progress: cnt {cnt} is more than of {of}")
    return cnt, of


def _reason(feedback: Feedback, fallback: str) -> str:
    text = "; ".join(d.strip() for d in feedback.details if d.strip()) or fallback
    return text[:MAX_DETAILS_CHARS]


def install_state_of(feedback: Feedback, stage_only: bool) -> InstallState:
    """The install state a feedback message puts the action in. `closed` ends it
    (installed, or staged for a download-only action; failed on failure); `canceled` and
    `rejected` end it as failed; `downloaded` is staged; `proceeding`, `resumed` and a
    `scheduled` install are installing, a download in progress downloading."""
    execution, finished = feedback.execution, feedback.finished
    if execution in (Execution.CANCELED, Execution.REJECTED):
        return InstallState.FAILED
    if execution is Execution.CLOSED:
        if finished is Finished.FAILURE:
            return InstallState.FAILED
        return InstallState.STAGED if stage_only else InstallState.INSTALLED
    if execution is Execution.DOWNLOADED:
        return InstallState.STAGED
    if execution is Execution.DOWNLOADING:
        return InstallState.DOWNLOADING
    return InstallState.INSTALLING


def status_after_feedback(
    previous: Mapping[str, Any], assignment: ReleaseAssignment, feedback: Feedback
) -> dict[str, Any]:
    """The device's release status after feedback about the action `assignment`: the
    fields an agent reports (`name`, `version`, `serial`, `state`, `reason`, `active`),
    plus `progress` when the device counts steps. `active` is the release that runs: the
    action's once installed, else what ran before."""
    state = install_state_of(feedback, assignment.stage_only)
    fallback = f"{feedback.execution.value}, {feedback.finished.value} (DDI feedback)"
    out: dict[str, Any] = {
        "name": assignment.name,
        "version": assignment.version,
        "serial": assignment.serial,
        "state": state.value,
        "reason": _reason(feedback, fallback),
        "source": "ddi",
    }
    if state is InstallState.INSTALLED:
        out["active"] = {"name": assignment.name, "version": assignment.version}
    elif previous.get("active"):
        out["active"] = dict(previous["active"])
    if feedback.progress is not None:
        out["progress"] = {"cnt": feedback.progress[0], "of": feedback.progress[1]}
    return out


def assignment_of_status(status: Mapping[str, Any]) -> ReleaseAssignment:
    """The action a release status reports about (for feedback on a running, superseded
    action)."""
    stage_only = _state(status) is InstallState.STAGED
    return ReleaseAssignment(str(status["name"]), str(status["version"]), stage_only,
                             int(status["serial"]))  # fmt: skip


def status_after_cancel(status: Mapping[str, Any], feedback: Feedback) -> dict[str, Any] | None:
    """The release status after the device answered a cancel of the action it reports
    running; None when the answer changes nothing yet (`proceeding` and the like). A
    cancel done (`closed` or `canceled`, not failed) ends the action as failed; a refused
    one (`rejected`, or closed with failure) lets it run on, and the cancel is not asked
    again."""
    done = feedback.execution in (Execution.CLOSED, Execution.CANCELED)
    if done and feedback.finished is not Finished.FAILURE:
        return {**status, "state": InstallState.FAILED.value,
                "reason": _reason(feedback, "canceled by the control plane")}  # fmt: skip
    if feedback.execution is Execution.REJECTED or done:
        return {**status, "cancel_rejected": status.get("serial")}
    return None


# configData.


def labels_after_config(
    labels: Mapping[str, str], data: object, mode: str = ConfigMode.MERGE.value
) -> dict[str, str]:
    """The device's labels after a configData `data` map in `mode` (merge: set these;
    replace: exactly these; remove: drop these keys); InvalidInput for a bad map.

    >>> labels_after_config({"kind": "gw"}, {"hw": "rev2"})
    {'kind': 'gw', 'hw': 'rev2'}
    >>> labels_after_config({"kind": "gw", "hw": "rev2"}, {"hw": ""}, "remove")
    {'kind': 'gw'}
    """
    try:
        chosen = ConfigMode(mode)
    except ValueError:
        raise InvalidInput(f"configData mode {mode!r} is not one of {', '.join(ConfigMode)}",
                           code="invalid_config_data") from None  # fmt: skip
    if not isinstance(data, Mapping) or not data:
        raise InvalidInput("configData: data must be a non-empty object of strings",
                           code="invalid_config_data")  # fmt: skip
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InvalidInput("configData: every key and value of data must be a string",
                           code="invalid_config_data")  # fmt: skip
    if chosen is ConfigMode.REMOVE:
        return {k: v for k, v in labels.items() if k not in data}
    try:
        given = validate_labels(data)
    except InvalidInput as e:
        raise InvalidInput(f"configData: {e.message}", code="invalid_config_data") from None
    merged = given if chosen is ConfigMode.REPLACE else {**labels, **given}
    return validate_labels(merged)


# Artifacts.


@dataclass(frozen=True)
class ModuleArtifact:
    """One artifact of a release as a software module with one file."""

    name: str
    version: str
    kind: str
    file_name: str
    size_bytes: int
    sha256: str
    sha1: str
    md5: str

    @property
    def module_id(self) -> str:
        return f"{self.name}@{self.version}"


def render_chunks(artifacts: Sequence[ModuleArtifact], base_url: str) -> list[dict[str, Any]]:
    """`deployment.chunks`: one chunk per artifact, sorted by name, with its file, hashes
    and download links under `base_url` (the target's `.../controller/v1/ID`)."""
    chunks = []
    for a in sorted(artifacts, key=lambda a: a.name):
        href = f"{base_url}/softwaremodules/{a.module_id}/artifacts/{a.file_name}"
        chunks.append({
            "part": a.kind,
            "name": a.name,
            "version": a.version,
            "artifacts": [{
                "filename": a.file_name,
                "hashes": {"sha1": a.sha1, "md5": a.md5, "sha256": a.sha256},
                "size": a.size_bytes,
                "_links": {
                    "download": {"href": href},
                    "download-http": {"href": href},
                    "md5sum": {"href": f"{href}.MD5SUM"},
                    "md5sum-http": {"href": f"{href}.MD5SUM"},
                },
            }],
        })  # fmt: skip
    return chunks


def md5sum_line(md5: str, file_name: str) -> str:
    """The `.MD5SUM` file of an artifact, as md5sum(1) writes it."""
    return f"{md5}  {file_name}\n"
