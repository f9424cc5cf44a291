"""The audit chain: every operator action as a record whose hash covers the previous one.

Editing a record changes its hash; deleting one breaks the `prev_hash` link or the
sequence; truncating the tail is caught by comparing the head with an anchor an operator
kept (`edgefleet audit verify --anchor SEQ:HASH`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: str  # ISO 8601 UTC with microseconds; kept as text so the hash is exact
    actor: str
    action: str
    target: str
    request_id: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str


def hash_record(
    seq: int,
    at: str,
    actor: str,
    action: str,
    target: str,
    request_id: str,
    details: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 over the canonical JSON of every field but the hash itself."""
    body = json.dumps(
        [seq, at, actor, action, target, request_id, details, prev_hash],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def chain_record(
    previous: AuditRecord | None,
    at: str,
    actor: str,
    action: str,
    target: str,
    request_id: str,
    details: Mapping[str, Any],
) -> AuditRecord:
    """The record that follows `previous` (or starts the chain)."""
    seq = 1 if previous is None else previous.seq + 1
    prev_hash = GENESIS_HASH if previous is None else previous.hash
    digest = hash_record(seq, at, actor, action, target, request_id, details, prev_hash)
    return AuditRecord(seq, at, actor, action, target, request_id, dict(details), prev_hash, digest)


@dataclass
class ChainVerifier:
    """Checks records fed in sequence order; `problem` holds the first fault found.

    An anchor is a (seq, hash) pair an operator wrote down earlier: the chain must still
    hold that exact record, which catches a rewritten or truncated log.
    """

    anchor: tuple[int, str] | None = None
    count: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    problem: str | None = None
    broken_seq: int | None = None

    def feed(self, record: AuditRecord) -> None:
        if self.problem is not None:
            return
        expected_seq = self.head_seq + 1
        if record.seq != expected_seq:
            self._fail(record.seq, f"record {expected_seq} is missing (next found: {record.seq})")
            return
        if record.prev_hash != self.head_hash:
            self._fail(record.seq, f"record {record.seq} does not link to record {self.head_seq}")
            return
        digest = hash_record(
            record.seq,
            record.at,
            record.actor,
            record.action,
            record.target,
            record.request_id,
            record.details,
            record.prev_hash,
        )
        if digest != record.hash:
            self._fail(record.seq, f"record {record.seq} was altered (its hash does not match)")
            return
        if self.anchor is not None and record.seq == self.anchor[0] and digest != self.anchor[1]:
            self._fail(record.seq, f"record {record.seq} differs from the anchor: log rewritten")
            return
        self.count += 1
        self.head_seq = record.seq
        self.head_hash = record.hash

    def finish(self) -> ChainVerifier:
        """Close the check: an anchor beyond the head means the log was truncated."""
        if self.problem is None and self.anchor is not None and self.anchor[0] > self.head_seq:
            self._fail(self.anchor[0], f"anchor record {self.anchor[0]} is gone: log truncated")
        return self

    def _fail(self, seq: int, problem: str) -> None:
        self.problem = problem
        self.broken_seq = seq

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(
    records: Iterable[AuditRecord], anchor: tuple[int, str] | None = None
) -> ChainVerifier:
    """Feed every record to a fresh verifier and return it, finished."""
    verifier = ChainVerifier(anchor=anchor)
    for record in records:
        verifier.feed(record)
    return verifier.finish()
