"""The Grafana dashboards (``grafana/build.py``): every metric shown, every panel explained."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from indexer.metrics import IndexerMetrics
from proxy.metrics import ProxyMetrics

ROOT = Path(__file__).resolve().parent.parent
_NAME = re.compile(r"\b((?:search_(?:proxy|indexer)_[a-z0-9_]+)|(?:[a-z_]+:[a-z0-9_]+:[a-z0-9_]+))\b")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in (ROOT / "grafana" / "dashboards").glob("*.json")}


def _recording_rules() -> dict[str, str]:
    rules = {}
    for path in (ROOT / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.update({rule["record"]: rule["expr"] for rule in group["rules"] if "record" in rule})
    return rules


def _family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _shown(exprs: list[str], rules: dict[str, str]) -> set[str]:
    """Metric families the expressions read, directly or through recording rules."""
    seen: set[str] = set()
    todo = [name for expr in exprs for name in _NAME.findall(expr)]
    while todo:
        name = todo.pop()
        if name in rules:
            todo.extend(n for n in _NAME.findall(rules[name]) if n != name)
        elif name not in seen:
            seen.add(_family(name))
    return seen


def test_every_exported_metric_family_is_on_a_dashboard() -> None:
    exprs = [target["expr"] for d in _dashboards().values() for p in d["panels"] for target in p["targets"]]
    shown = _shown(exprs, _recording_rules())
    exported = {family.name for metrics in (ProxyMetrics(), IndexerMetrics()) for family in metrics.registry.collect()}
    assert sorted(exported - shown) == [], "metric families no panel shows"


def test_every_panel_has_a_unit_a_description_and_the_datasource_variable() -> None:
    for name, dashboard in _dashboards().items():
        assert dashboard["uid"].startswith("hos-search-"), name
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in dashboard["panels"]:
            where = (name, panel["title"])
            assert panel["description"].strip(), where
            assert panel["fieldConfig"]["defaults"]["unit"], where
            assert panel["datasource"]["uid"] == "${datasource}", where
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), where


def test_rates_follow_the_scrape_interval() -> None:
    """``rate(x[5m])`` is wrong at a 1-minute scrape and blurs a zoomed-in view: $__rate_interval."""
    fixed = re.compile(r"\b(?:rate|irate)\([^\[]*\[(?!\$__rate_interval\])")
    for name, dashboard in _dashboards().items():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                assert not fixed.search(target["expr"]), (name, panel["title"], target["expr"])
