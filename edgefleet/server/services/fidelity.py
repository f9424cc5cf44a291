"""Telemetry fidelity on the control plane: each stored batch updates its device's advice
(which metrics to sample finer or coarser, `core.telemetry.fidelity`), kept with the
device's detector state; a changed advice re-renders the device's desired state, so the
agent follows it through the long poll.

The advice is stored under `ADVICE_KEY` in the per-device detector table: it is, like a
KPI detector, a judgement the control plane carries from batch to batch (KPI names are
never empty, so the key cannot collide with one).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from edgefleet.core.telemetry.fidelity import (
    FidelityAdvice,
    FidelityConfig,
    advice_from_document,
    advice_to_document,
    advise_fidelity,
    merge_advice,
    trends_from_windows,
)
from edgefleet.core.telemetry.windows import Window
from edgefleet.store import Transaction

ADVICE_KEY = ""


def stored_advice(tx: Transaction, device_id: str, config: FidelityConfig) -> FidelityAdvice:
    """The device's advice for the metrics `config` watches (none while it watches none)."""
    if not config.enabled or not config.thresholds:
        return FidelityAdvice()
    advice = advice_from_document(tx.telemetry.detector(device_id, ADVICE_KEY))
    watched = config.metrics
    return FidelityAdvice(advice.fine & watched, advice.coarse & watched, advice.reasons)


def update_advice(
    tx: Transaction,
    device_id: str,
    windows: Sequence[Window],
    config: FidelityConfig,
    now: datetime,
) -> bool:
    """Judge a stored batch; True when the device's advice changed (and was saved). Without
    thresholds nothing is read or written: what is stored then is not rendered."""
    if not config.enabled or not config.thresholds:
        return False
    trends = trends_from_windows(windows, config.metrics)
    if not trends:
        return False
    stored = tx.telemetry.detector(device_id, ADVICE_KEY)
    previous = advice_from_document(stored)
    judged = advise_fidelity(
        config.thresholds,
        trends,
        near_fraction=config.near_fraction,
        far_fraction=config.far_fraction,
        horizon_s=config.horizon_s,
    )
    # Metrics no longer watched lose their advice; those absent from the batch keep it.
    kept = FidelityAdvice(
        previous.fine & config.metrics, previous.coarse & config.metrics, previous.reasons
    )
    new = merge_advice(kept, judged, trends.keys())
    if (new.fine, new.coarse) == (previous.fine, previous.coarse):
        return False
    tx.telemetry.save_detector(device_id, ADVICE_KEY, advice_to_document(new), stored is not None,
                               now)  # fmt: skip
    return True
