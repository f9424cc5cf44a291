"""The Grafana dashboard shipped in deploy/grafana is built on the recording rules: every
panel queries the Prometheus data source through recorded series that the rules define,
and every recorded series is on some panel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RECORDED = re.compile(r"\bedgefleet:[a-z0-9_:]+")


def recorded_by_rules() -> set[str]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "edgefleet-rules.yml").read_text())
    return {r["record"] for g in groups["groups"] for r in g["rules"] if "record" in r}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (DEPLOY / "grafana" / "edgefleet-dashboard.json").read_text()
    )
    return loaded


def test_every_panel_queries_recorded_series_the_rules_define() -> None:
    board = dashboard()
    recorded = recorded_by_rules()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(RECORDED.findall(target["expr"]))
            assert names, f"{panel['title']}: {target['expr']} reads no recorded series"
            assert names <= recorded, f"{panel['title']}: {names - recorded} not recorded"
            assert "edgefleet_" not in target["expr"], "panels read recorded series only"
            used |= names
    assert used == recorded, f"recorded but on no panel: {recorded - used}"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
