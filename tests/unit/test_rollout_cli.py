"""The CLI's pure parts for rollouts: manifests from flags, reading manifest files for
`edgefleet apply`, and the progress bars of `rollouts status`."""

from __future__ import annotations

import pytest
from rich.console import Console

from edgefleet.cli.apply import HANDLERS, read_documents
from edgefleet.cli.rollout_view import BAR_WIDTH, render_status, segment_counts, wave_bar
from edgefleet.cli.rollouts import manifest_from_flags
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.errors import InvalidInput


def test_flags_make_a_manifest_the_engine_accepts() -> None:
    manifest = manifest_from_flags(
        "det@2.0.0", name="det-2", target="kind=camera", waves="1, 10%,100%", soak="5m",
        max_unavailable="2", devices_per_minute=30, max_install_failure_percent=5,
        max_error_rate_percent=1, min_requests=200, min_devices=3,
        max_latency_increase_percent=20, on_failure="pause",
        windows=["0 2 * * *;4h", "0 3 * * sat;2h;Europe/Berlin"], deadline="72h",
        deadline_action="force", max_attempts=2,
    )  # fmt: skip
    spec = parse_rollout_spec(manifest)
    assert spec.name == "det-2" and [str(w.size) for w in spec.strategy.waves] == [
        "1",
        "10%",
        "100%",
    ]
    assert spec.gates.workload_error_rate is not None
    assert spec.gates.workload_error_rate.min_requests == 200
    assert spec.gates.kpis[0].kpi == "p95_latency_ms" and spec.gates.kpis[0].min_devices == 3
    assert [w.time_zone for w in spec.maintenance_windows] == ["device", "Europe/Berlin"]
    assert spec.deadline is not None and spec.deadline.after_s == 72 * 3600
    assert spec.retries.max_attempts == 2 and spec.on_failure.value == "pause"


def test_a_bad_window_flag_is_refused() -> None:
    with pytest.raises(InvalidInput, match="CRON;DURATION"):
        manifest_from_flags("det@2.0.0", windows=["0 2 * * *"])


def test_apply_reads_every_document_and_knows_its_kinds() -> None:
    text = """
kind: Rollout
metadata: {name: det}
spec:
  release: det@2.0.0
  deadline: {at: 2026-07-01T00:00:00Z, action: force}
---
kind: ReleaseTrain
metadata: {name: det}
spec: {releases: [det@2.0.0]}
"""
    docs = read_documents(text, "rollout.yaml")
    assert [d["kind"] for d in docs] == ["Rollout", "ReleaseTrain"]
    assert docs[0]["spec"]["deadline"]["at"] == "2026-07-01T00:00:00Z"  # JSON-safe
    assert parse_rollout_spec(docs[0]).deadline is not None
    assert {"Rollout", "ReleaseTrain"} <= set(HANDLERS)
    with pytest.raises(InvalidInput, match="document 2: kind 'Gadget' is not supported"):
        read_documents("kind: Rollout\n---\nkind: Gadget\n", "x.yaml")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        read_documents("kind: [", "x.yaml")
    with pytest.raises(InvalidInput, match="no document"):
        read_documents("", "x.yaml")


def test_wave_bars_show_every_kind_of_device_and_fill_the_width() -> None:
    counts = {"installed": 10, "updating": 1, "failed": 1, "waiting": 88}
    bar = wave_bar(counts, 100)
    assert len(bar.plain) == BAR_WIDTH
    assert bar.plain.count("█") == 5 and bar.plain.endswith("·")  # 3 + 1 + 1 cells
    assert dict(segment_counts(counts))["in progress"] == 1
    assert wave_bar({}, 0).plain == "·" * BAR_WIDTH
    assert wave_bar({"installed": 3}, 3).plain == "█" * BAR_WIDTH


def test_status_shows_waves_and_gates_with_values() -> None:
    status = {
        "id": "ro-1", "name": "det", "release": "det@2.0.0", "target": "kind=camera",
        "state": "rolling-back", "summary": "rolling back: 0 of 1 device(s) ...",
        "skipped": 1,
        "waves": [{"index": 0, "label": "1", "size": 1, "soak_s": 60, "current": True,
                   "counts": {"rolling-back": 1},
                   "gate": {"verdict": "fail"}}],
        "gates": [{"wave": 0, "verdict": "fail", "results": [
            {"gate": "workload_error_rate", "verdict": "fail", "measured": 31.25,
             "threshold": 5.0, "unit": "%", "devices": 1, "samples": 160}]}],
    }  # fmt: skip
    console = Console(width=160, record=True)
    console.print(render_status(status))
    text = console.export_text()
    assert "workload_error_rate" in text and "31.2%" in text and "≤ 5%" in text
    assert "1 (1)" in text and "fail" in text and "1 device(s) skipped" in text
