"""How the CLI draws a rollout's status: a header, one progress bar per wave (installed,
in progress, failed, skipped, rolled back, waiting) and the gate evaluations with their
measured values and thresholds. Works on the JSON of `GET /v1/rollouts/{id}`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from edgefleet.cli.output import add_column, new_table, styled
from edgefleet.core.durations import format_duration
from edgefleet.core.hidden_characters import escape_hidden

BAR_WIDTH = 32
# Bar segments in drawing order: (name, device states, character, style).
SEGMENTS = (
    ("installed", ("installed",), "█", "green"),
    ("in progress", ("updating", "retry-wait", "rolling-back"), "█", "yellow"),
    ("failed", ("failed", "rollback-failed"), "█", "red"),
    ("skipped", ("skipped-incompatible", "removed"), "█", "bright_black"),
    ("rolled back", ("rolled-back",), "█", "magenta"),
    ("waiting", ("waiting", "outside-window"), "·", "bright_black"),
)
_VERDICT_STYLE = {"pass": "green", "fail": "red", "insufficient-data": "yellow"}


def segment_counts(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """The wave's devices per bar segment, in drawing order."""
    return [(name, sum(counts.get(s, 0) for s in states)) for name, states, _, _ in SEGMENTS]


def wave_bar(counts: Mapping[str, int], size: int, width: int = BAR_WIDTH) -> Text:
    """A bar of `width` cells split by segment; every non-empty segment gets a cell."""
    bar = Text()
    if size <= 0:
        return Text("·" * width, style="bright_black")
    parts = segment_counts(counts)
    cells = [max(1, round(n * width / size)) if n else 0 for _, n in parts]
    while sum(cells) > width:
        cells[cells.index(max(cells))] -= 1
    cells[-1] += width - sum(cells)
    for (_, _, char, style), n in zip(SEGMENTS, cells, strict=True):
        bar.append(char * n, style=style)
    return bar


def verdict_text(verdict: str | None) -> Text:
    if verdict is None:
        return Text("-", style="bright_black")
    return Text(verdict, style=_VERDICT_STYLE.get(verdict, ""))


def _measured(result: Mapping[str, Any]) -> str:
    measured = result.get("measured")
    if not isinstance(measured, int | float):
        return "-"
    sign = "+" if result["gate"].startswith("kpi:") else ""
    return f"{measured:{sign}.3g}{result['unit']}"


def _threshold(result: Mapping[str, Any]) -> str:
    sign = "+" if result["gate"].startswith("kpi:") else ""
    return f"≤ {sign}{result['threshold']:g}{result['unit']}"


def render_status(status: Mapping[str, Any]) -> RenderableType:
    header = Text.from_markup(
        f"[bold]{status['name']}[/bold] ({status['id']}) · {status['release']} → "
        f"'{status['target'] or '*'}' · {styled(status['state'])}"
    )
    summary = Text(escape_hidden(status["summary"]), style="italic")
    waves = new_table()
    for column in ("WAVE", "SIZE", "PROGRESS", "INSTALLED", "IN PROGRESS", "FAILED", "SKIPPED",
                   "ROLLED BACK", "SOAK", "GATES"):  # fmt: skip
        add_column(waves, column)
    for wave in status["waves"]:
        segments = dict(segment_counts(wave["counts"]))
        marker = "▶ " if wave["current"] and status["state"] not in _FINAL else "  "
        gate = wave.get("gate") or {}
        waves.add_row(
            f"{marker}{wave['index'] + 1} ({wave['label']})",
            str(wave["size"]),
            wave_bar(wave["counts"], wave["size"]),
            str(segments["installed"]),
            str(segments["in progress"]),
            str(segments["failed"]),
            str(segments["skipped"]),
            str(segments["rolled back"]),
            format_duration(wave["soak_s"]),
            verdict_text(gate.get("verdict")),
        )
    parts: list[RenderableType] = [header, summary, Text()]
    if status["waves"]:
        parts.append(waves)
    if status.get("skipped"):
        parts.append(Text(f"{status['skipped']} device(s) skipped as incompatible",
                          style="bright_black"))  # fmt: skip
    if status["gates"]:
        gates = new_table(title_justify="left")
        for column in ("WAVE", "GATE", "VERDICT", "MEASURED", "THRESHOLD", "DEVICES", "SAMPLES"):
            add_column(gates, column)
        for evaluation in status["gates"]:
            for result in evaluation["results"] or [{}]:
                if not result:
                    gates.add_row(
                        str(evaluation["wave"] + 1),
                        "(no gates)",
                        verdict_text(evaluation["verdict"]),
                        "",
                        "",
                        "",
                        "",
                    )
                    continue  # fmt: skip
                gates.add_row(
                    str(evaluation["wave"] + 1),
                    result["gate"],
                    verdict_text(result["verdict"]),
                    _measured(result),
                    _threshold(result),
                    str(result["devices"]),
                    str(result["samples"]),
                )
        parts += [Text(), Text("Gates", style="bold"), gates]
    return Group(*parts)


def render_plan(answer: Mapping[str, Any]) -> RenderableType:
    """A dry run's answer: the rollout it would create, its waves (which devices in which)
    and the devices skipped as incompatible."""
    rollout = answer["rollout"]
    verb = "would be created" if answer["created"] else "unchanged (already active)"
    parts: list[RenderableType] = [Text(
        f"rollout {rollout['name']} {verb} (dry run, nothing stored): {rollout['release']} "
        f"→ '{rollout['target'] or '*'}'"
    )]  # fmt: skip
    if answer["superseded"]:
        parts.append(Text(f"would supersede and abort: {', '.join(answer['superseded'])}"))
    plan = answer.get("plan")
    if plan is None:
        return Group(*parts)
    waves = new_table()
    for column in ("WAVE", "SIZE", "SOAK", "DEVICES"):
        add_column(waves, column)
    for wave in plan["waves"]:
        waves.add_row(f"{wave['index'] + 1} ({wave['label']})", str(wave["size"]),
                      format_duration(wave["soak_s"]),
                      escape_hidden(", ".join(wave["devices"])))  # fmt: skip
    matched = len(plan["devices"])
    parts += [Text(f"{matched} device(s) match; {len(plan['waves'])} wave(s):"), waves]
    skipped = [d for d in plan["devices"] if not d["compatible"]]
    for device in skipped:
        parts.append(Text(escape_hidden(f"skipped {device['name']}: {device['reason']}"),
                          style="bright_black"))  # fmt: skip
    return Group(*parts)


_FINAL = frozenset({"succeeded", "failed", "aborted", "rolled-back"})


def is_final(status: Mapping[str, Any]) -> bool:
    return status["state"] in _FINAL
