"""Attestation: what a device's measurement of its software state must show, and what a
device that fails it gets.

A device measures its software state (the agent's code, the files in its release slots, the
settings that matter) into a JSON document; its digest is the SHA-256 of the document's
canonical bytes (`measurement_digest`). With a TPM the agent also extends that digest into
a resettable PCR and quotes the PCR over a fresh server nonce: the control plane replays
the agent's measurement log (`replay_pcr`) and compares it with the quoted value. The
verdict (`judge`) is one of three states, each with a reason:

    verified    the TPM quote checked out and the measurement matches the releases
    unverified  the measurement matches, but no TPM vouches for it (or none arrived yet)
    failed      the measurement does not match, or the quote does not check out

The fleet policy (`AttestationPolicy`) says what a failing device loses: its release
section, its workloads, and/or gets the quarantine label `attestation=failed`; by default
nothing (report only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# PCR 16 is the debug PCR: resettable from locality 0, which every tool can reach, and not
# extended by firmware or the boot chain.
MEASUREMENT_PCR = 16
PCR_BANK = "sha256"
QUARANTINE_LABEL = ("attestation", "failed")
POLICY_ACTIONS = ("releases", "workloads", "label")


class AttestationStatus(StrEnum):
    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    status: AttestationStatus
    reason: str


@dataclass(frozen=True)
class AttestationPolicy:
    """What a device whose attestation failed loses; `require_tpm`: an unverified device
    (no TPM quote) counts as failing too."""

    withhold_releases: bool = False
    withhold_workloads: bool = False
    quarantine_label: bool = False
    require_tpm: bool = False

    @property
    def report_only(self) -> bool:
        return not (self.withhold_releases or self.withhold_workloads or self.quarantine_label)


def parse_policy(actions: str, *, require_tpm: bool = False) -> AttestationPolicy:
    """A policy from a comma-separated list of actions (`releases`, `workloads`, `label`);
    ValueError naming an unknown one.

    >>> policy = parse_policy("releases,label")
    >>> policy.withhold_releases, policy.withhold_workloads, policy.quarantine_label
    (True, False, True)
    """
    chosen = {a.strip() for a in actions.split(",") if a.strip()}
    unknown = sorted(chosen - set(POLICY_ACTIONS))
    if unknown:
        raise ValueError(f"unknown attestation action {unknown[0]!r}; "
                         f"expected some of {', '.join(POLICY_ACTIONS)}")  # fmt: skip
    return AttestationPolicy("releases" in chosen, "workloads" in chosen, "label" in chosen,
                             require_tpm)  # fmt: skip


def is_restricted(policy: AttestationPolicy, status: AttestationStatus | None) -> bool:
    """Whether the policy's actions apply to a device in `status` (None: never attested)."""
    if status is AttestationStatus.FAILED:
        return True
    return policy.require_tpm and status is not AttestationStatus.VERIFIED


def canonical_bytes(measurement: Mapping[str, Any]) -> bytes:
    """The bytes a measurement's digest is taken over: sorted keys, no spaces, UTF-8."""
    return json.dumps(measurement, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode()  # fmt: skip


def measurement_digest(measurement: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a measurement's canonical bytes."""
    return hashlib.sha256(canonical_bytes(measurement)).hexdigest()


def extend(pcr: bytes, digest: bytes) -> bytes:
    """A SHA-256 PCR after extending `digest` into it: H(pcr || digest)."""
    return hashlib.sha256(pcr + digest).digest()


def replay_pcr(log: Sequence[str]) -> str:
    """The PCR value (hex) a reset SHA-256 PCR holds after extending each digest of `log`.

    >>> replay_pcr([]) == "00" * 32
    True
    """
    pcr = bytes(32)
    for digest in log:
        pcr = extend(pcr, bytes.fromhex(digest))
    return pcr.hex()


def slot_mismatches(
    slots: Mapping[str, Mapping[str, Any]],
    releases: Mapping[tuple[str, str], Mapping[str, str] | None],
) -> list[str]:
    """Why the measured slots differ from the releases they claim to hold (empty: they do
    not). `slots`: slot name -> {"release", "version", "files": {artifact: sha256}};
    `releases`: (name, version) -> {artifact: sha256} as published, None when unknown.

    >>> slot_mismatches({"a": {"release": "m", "version": "1", "files": {"w": "bad"}}},
    ...                 {("m", "1"): {"w": "ok"}})
    ['slot a: w of m 1 has sha256 bad, the release has ok']
    """
    problems = []
    for slot, measured in sorted(slots.items()):
        name, version = str(measured.get("release")), str(measured.get("version"))
        published = releases.get((name, version))
        if published is None:
            problems.append(f"slot {slot}: release {name} {version} is not published")
            continue
        files = dict(measured.get("files") or {})
        for artifact, sha in sorted(published.items()):
            got = files.pop(artifact, None)
            if got is None:
                problems.append(f"slot {slot}: {artifact} of {name} {version} is missing")
            elif got != sha:
                problems.append(f"slot {slot}: {artifact} of {name} {version} has sha256 "
                                f"{got}, the release has {sha}")  # fmt: skip
        problems.extend(f"slot {slot}: {extra} is not part of {name} {version}"
                        for extra in sorted(files))  # fmt: skip
    return problems


@dataclass(frozen=True)
class QuoteCheck:
    """What the control plane found checking a TPM quote: `problem` None when the signature,
    the nonce and the PCR digest all held; `pcrs` the quoted PCR values (index -> hex)."""

    problem: str | None
    pcrs: Mapping[int, str]


def judge(
    measurement: Mapping[str, Any],
    claimed_digest: str,
    mismatches: Sequence[str],
    quote: QuoteCheck | None,
    log: Sequence[str],
) -> Verdict:
    """The verdict on one attestation. `quote` None: the device has no TPM; `log`: the
    measurement digests the device extended into its PCR since it reset it."""
    digest = measurement_digest(measurement)
    if digest != claimed_digest:
        return Verdict(AttestationStatus.FAILED,
                       f"measurement digest {claimed_digest} is not the digest of the "
                       f"measurement sent ({digest})")  # fmt: skip
    if mismatches:
        return Verdict(AttestationStatus.FAILED, "; ".join(mismatches))
    if quote is None:
        return Verdict(AttestationStatus.UNVERIFIED, "software measurement only (no TPM)")
    if quote.problem is not None:
        return Verdict(AttestationStatus.FAILED, quote.problem)
    quoted = quote.pcrs.get(MEASUREMENT_PCR)
    if quoted is None:
        return Verdict(AttestationStatus.FAILED, f"the quote does not cover PCR {MEASUREMENT_PCR}")
    if not log or log[-1] != digest:
        return Verdict(AttestationStatus.FAILED,
                       "the measurement log does not end with this measurement")  # fmt: skip
    replayed = replay_pcr(log)
    if replayed != quoted.lower():
        return Verdict(AttestationStatus.FAILED,
                       f"PCR {MEASUREMENT_PCR} is {quoted.lower()}, the measurement log "
                       f"replays to {replayed}")  # fmt: skip
    return Verdict(AttestationStatus.VERIFIED,
                   f"TPM quote over PCR {MEASUREMENT_PCR} matches the measurement")  # fmt: skip
