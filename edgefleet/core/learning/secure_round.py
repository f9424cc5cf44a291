"""One round of secure aggregation, after Bonawitz et al. (CCS 2017), as the control plane
runs it: it relays, counts and finally sums, and never holds one client's update in clear.

    KEYS ──all of C or deadline──▶ SHARES ──▶ MASKED ──▶ UNMASK ──▶ DONE
      └──────────── fewer than t at any step's end ─────────────▶ FAILED

    KEYS    each client u advertises two X25519 public keys: c_pk (to encrypt its shares
            for the others) and s_pk (for pairwise mask seeds).                  U1
    SHARES  u splits its self-mask seed b_u and its s_sk into t-of-|U1| Shamir shares and
            sends one of each to every v in U1, encrypted under KA(c_sk_u, c_pk_v).  U2
    MASKED  u trains, quantises its update x_u into the ring and sends
            y_u = x_u + PRG(b_u) + sum_{v in U2, v != u} sign(u, v) * PRG(s_uv),
            sign = +1 when u < v else -1, s_uv = KA(s_sk_u, s_pk_v) = KA(s_sk_v, s_pk_u).  U3
    UNMASK  each survivor reveals, for every v in U2, its share of b_v when v is in U3, or
            of s_sk_v when v dropped out after SHARES (never both for one v).        U4
    DONE    with t shares each, the plane rebuilds b_u (u in U3) and s_sk_v (v in U2 - U3):
            sum_{U3} y_u - PRG(b_u) - the masks the dropped v left in the survivors' y_u
            = sum_{U3} x_u, exactly (ring arithmetic).

A step ends when every client still in the round has answered, or at its deadline (a share
of the round's deadline, `PHASE_FRACTIONS`); it needs at least t answers (t = minClients)
or the round fails with a reason. Key agreement is a port (`Agree`), so this module needs
no cryptography library: the shells pass security.secure_aggregation.mask_seed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np

from edgefleet.core.learning.ring import Ring, expand_mask, unpack
from edgefleet.core.learning.shamir import SHARE_BYTES, Share, combine_shares
from edgefleet.errors import Conflict, InvalidInput

KEY_BYTES = 32
SEED_BYTES = 32
MAX_SHARE_CIPHERTEXT_BYTES = 256

Agree = Callable[[bytes, bytes], bytes]  # (s_sk of one client, s_pk of another) -> seed


class Phase(StrEnum):
    KEYS = "keys"
    SHARES = "shares"
    MASKED = "masked"
    UNMASK = "unmask"
    DONE = "done"
    FAILED = "failed"


NEXT_PHASE = {
    Phase.KEYS: Phase.SHARES,
    Phase.SHARES: Phase.MASKED,
    Phase.MASKED: Phase.UNMASK,
    Phase.UNMASK: Phase.DONE,
}
PHASE_FRACTIONS = {Phase.KEYS: 0.15, Phase.SHARES: 0.15, Phase.MASKED: 0.5, Phase.UNMASK: 0.2}


@dataclass(frozen=True)
class RoundState:
    job: str
    number: int
    clients: tuple[str, ...]  # the planned cohort C, sorted
    threshold: int
    length: int  # elements of the update vector
    ring_bits: int
    deadline_s: float
    phase: Phase
    phase_deadline: datetime
    keys: Mapping[str, tuple[bytes, bytes]] = field(default_factory=dict)  # U1: (c_pk, s_pk)
    shares: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)  # U2: u -> v -> ct
    masked: Mapping[str, bytes] = field(default_factory=dict)  # U3: packed y_u
    reveals: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)  # U4: v -> u -> share
    reason: str = ""

    def expected(self) -> tuple[str, ...]:
        """The clients whose answer the current step waits for."""
        source: Collection[str] = {
            Phase.KEYS: self.clients,
            Phase.SHARES: self.keys,
            Phase.MASKED: self.shares,
            Phase.UNMASK: self.masked,
        }.get(self.phase, ())
        return tuple(sorted(source))

    def answered(self) -> tuple[str, ...]:
        got: Mapping[str, Any] = {
            Phase.KEYS: self.keys,
            Phase.SHARES: self.shares,
            Phase.MASKED: self.masked,
            Phase.UNMASK: self.reveals,
        }.get(self.phase, {})
        return tuple(sorted(got))

    def dropped(self) -> tuple[str, ...]:
        """Clients that sent shares but no masked input: their pairwise masks are rebuilt."""
        return tuple(sorted(set(self.shares) - set(self.masked)))


def open_round(
    job: str,
    number: int,
    clients: tuple[str, ...],
    threshold: int,
    length: int,
    ring_bits: int,
    deadline_s: float,
    now: datetime,
) -> RoundState:
    """A round in its KEYS step for the planned `clients`."""
    if not 2 <= threshold <= len(clients):
        raise InvalidInput(f"round: threshold {threshold} needs 2..{len(clients)} clients")
    return RoundState(
        job,
        number,
        tuple(sorted(clients)),
        threshold,
        length,
        ring_bits,
        deadline_s,
        Phase.KEYS,
        _phase_deadline(Phase.KEYS, deadline_s, now),
    )


def _phase_deadline(phase: Phase, deadline_s: float, now: datetime) -> datetime:
    return now + timedelta(seconds=deadline_s * PHASE_FRACTIONS.get(phase, 0.0))


def accept(state: RoundState, client: str, phase: Phase, payload: Any) -> RoundState:
    """`state` with `client`'s answer to step `phase` recorded; Conflict when the round is
    not at that step or the client is not (or no longer) in it, InvalidInput when the answer
    is malformed. The same answer twice is refused, never merged."""
    if state.phase != phase:
        raise Conflict(
            f"round {state.number} is at step {state.phase}, not {phase}",
            code="training_wrong_step",
        )
    if client not in state.expected():
        raise Conflict(
            f"device is not in step {phase} of round {state.number}", code="training_not_in_step"
        )
    if client in state.answered():
        raise Conflict(f"device already answered step {phase}", code="training_answered")
    if phase is Phase.KEYS:
        c_pk, s_pk = _read_keys(payload)
        return replace(state, keys={**state.keys, client: (c_pk, s_pk)})
    if phase is Phase.SHARES:
        ciphertexts = _read_bytes_map(payload, set(state.keys), MAX_SHARE_CIPHERTEXT_BYTES)
        return replace(state, shares={**state.shares, client: ciphertexts})
    if phase is Phase.MASKED:
        if not isinstance(payload, bytes):
            raise InvalidInput("masked input: expected bytes")
        unpack(payload, state.length, state.ring_bits)  # checks the length
        return replace(state, masked={**state.masked, client: payload})
    shares = _read_bytes_map(payload, set(state.shares), SHARE_BYTES)
    for data in shares.values():
        Share.from_bytes(data)
    return replace(state, reveals={**state.reveals, client: shares})


def _read_keys(payload: Any) -> tuple[bytes, bytes]:
    if not isinstance(payload, Mapping) or set(payload) != {"c_pk", "s_pk"}:
        raise InvalidInput("keys: expected c_pk and s_pk")
    c_pk, s_pk = payload["c_pk"], payload["s_pk"]
    if not (isinstance(c_pk, bytes) and isinstance(s_pk, bytes)) or {len(c_pk), len(s_pk)} != {
        KEY_BYTES
    }:
        raise InvalidInput(f"keys: expected two {KEY_BYTES}-byte public keys")
    if c_pk == s_pk:
        raise InvalidInput("keys: c_pk and s_pk must differ")
    return c_pk, s_pk


def _read_bytes_map(payload: Any, expected: set[str], max_bytes: int) -> dict[str, bytes]:
    if not isinstance(payload, Mapping) or set(payload) != expected:
        raise InvalidInput(f"expected one entry for each of {len(expected)} clients")
    for value in payload.values():
        if not isinstance(value, bytes) or not 0 < len(value) <= max_bytes:
            raise InvalidInput(f"expected entries of 1..{max_bytes} bytes")
    return {str(k): v for k, v in payload.items()}


def advance(state: RoundState, now: datetime) -> RoundState:
    """The round moved on when its step is over (everyone answered, or the deadline passed);
    FAILED with a reason when fewer than the threshold answered."""
    if state.phase in (Phase.DONE, Phase.FAILED):
        return state
    answered, expected = state.answered(), state.expected()
    if len(answered) < len(expected) and now < state.phase_deadline:
        return state
    if len(answered) < state.threshold:
        reason = (
            f"step {state.phase}: {len(answered)} of {len(expected)} clients answered "
            f"by the deadline, fewer than the {state.threshold} needed"
        )
        return replace(state, phase=Phase.FAILED, reason=reason)
    phase = NEXT_PHASE[state.phase]
    return replace(state, phase=phase, phase_deadline=_phase_deadline(phase, state.deadline_s, now))


def view_for(state: RoundState, client: str) -> dict[str, Any]:
    """What `client` may see of the round: the step, whether it is in it, and, while the
    step waits for its answer, what it needs for that answer (the others' public keys at
    SHARES, the shares sent to it at MASKED, who is left at UNMASK). A client polls, so
    the view is small whenever there is nothing for it to do."""
    waiting = client in state.expected() and client not in state.answered()
    view: dict[str, Any] = {
        "phase": str(state.phase),
        "in_step": client in state.expected(),
        "waiting_for_me": waiting,
    }
    if state.phase is Phase.FAILED:
        view["reason"] = state.reason
    if not waiting:
        return view
    view.update(threshold=state.threshold, length=state.length, ring_bits=state.ring_bits)
    if state.phase is Phase.SHARES:
        view["keys"] = {u: {"c_pk": c, "s_pk": s} for u, (c, s) in sorted(state.keys.items())}
    elif state.phase is Phase.MASKED:
        view["u2"] = sorted(state.shares)
        view["shares"] = {
            u: cts[client] for u, cts in sorted(state.shares.items()) if client in cts
        }
    elif state.phase is Phase.UNMASK:
        view["u2"] = sorted(state.shares)
        view["u3"] = sorted(state.masked)
    return view


def aggregate(state: RoundState, agree: Agree) -> Ring:
    """The ring sum of the survivors' updates, from a round whose UNMASK step is over.
    InvalidInput when the revealed shares do not rebuild the masks (a cheating client)."""
    if state.phase is not Phase.DONE:
        raise Conflict(f"round {state.number} is at step {state.phase}, not done")
    modulus = 1 << state.ring_bits
    total = np.zeros(state.length, dtype=np.int64)
    for y in state.masked.values():
        total = (total + unpack(y, state.length, state.ring_bits)) % modulus
    for u in sorted(state.masked):
        b_u = _rebuild(state, u)
        total = (total - expand_mask(b_u, state.length, state.ring_bits)) % modulus
    for v in state.dropped():
        s_sk_v = _rebuild(state, v)
        for u in sorted(state.masked):
            mask = expand_mask(agree(s_sk_v, state.keys[u][1]), state.length, state.ring_bits)
            sign = 1 if u < v else -1  # the sign u gave this mask
            total = (total - sign * mask) % modulus
    return total


def _rebuild(state: RoundState, subject: str) -> bytes:
    shares = [Share.from_bytes(r[subject]) for r in state.reveals.values() if subject in r]
    if len(shares) < state.threshold:
        raise InvalidInput(
            f"round {state.number}: {len(shares)} shares of {subject}'s secret, "
            f"{state.threshold} needed"
        )
    return combine_shares(shares[: state.threshold], SEED_BYTES)


def survivors(state: RoundState) -> tuple[str, ...]:
    """The clients whose updates the aggregate holds (U3)."""
    return tuple(sorted(state.masked))


def state_to_wire(state: RoundState) -> dict[str, Any]:
    """`state` as plain data (bytes kept as bytes) for the store."""
    return {
        "job": state.job,
        "number": state.number,
        "clients": list(state.clients),
        "threshold": state.threshold,
        "length": state.length,
        "ring_bits": state.ring_bits,
        "deadline_s": state.deadline_s,
        "phase": str(state.phase),
        "phase_deadline": state.phase_deadline.isoformat(),
        "keys": {u: [c, s] for u, (c, s) in state.keys.items()},
        "shares": {u: dict(v) for u, v in state.shares.items()},
        "masked": dict(state.masked),
        "reveals": {u: dict(v) for u, v in state.reveals.items()},
        "reason": state.reason,
    }


def state_from_wire(data: Mapping[str, Any]) -> RoundState:
    return RoundState(
        job=str(data["job"]),
        number=int(data["number"]),
        clients=tuple(data["clients"]),
        threshold=int(data["threshold"]),
        length=int(data["length"]),
        ring_bits=int(data["ring_bits"]),
        deadline_s=float(data["deadline_s"]),
        phase=Phase(data["phase"]),
        phase_deadline=datetime.fromisoformat(data["phase_deadline"]),
        keys={u: (bytes(c), bytes(s)) for u, (c, s) in data["keys"].items()},
        shares={u: dict(v) for u, v in data["shares"].items()},
        masked=dict(data["masked"]),
        reveals={u: dict(v) for u, v in data["reveals"].items()},
        reason=str(data["reason"]),
    )
