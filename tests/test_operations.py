"""Operators' files: Prometheus config and rules (checked and unit-tested by promtool) and the
Grafana dashboards (generated from code, every query naming metrics the services export)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from indexer.metrics import IndexerMetrics
from proxy.metrics import ProxyMetrics

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = shutil.which("promtool")
# .ci/run installs Debian's prometheus package; a machine without it skips these, visibly.
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
_METRIC = re.compile(r"\b(search_(?:proxy|indexer)_[a-z0-9_]+)")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _exported_names() -> set[str]:
    names: set[str] = set()
    for registry in (ProxyMetrics().registry, IndexerMetrics().registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    return names


_RECORDED = re.compile(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")  # level:metric:operations


def _referenced(text: str) -> set[str]:
    """Raw metric names in a PromQL expression (recording-rule names are checked separately)."""
    return set(_METRIC.findall(_RECORDED.sub(" ", text)))


def _unknown(referenced: set[str], exported: set[str]) -> set[str]:
    unknown = set()
    for name in referenced:
        base = name
        for suffix in _SUFFIXES:
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        if name not in exported and base not in exported:
            unknown.add(name)
    return unknown


@needs_promtool
def test_prometheus_config_and_rules_are_valid() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", "prometheus/prometheus.yml"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_rules_fire_as_their_unit_tests_say() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "prometheus/tests/rules_test.yml"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_only_name_metrics_the_services_export() -> None:
    exported = _exported_names()
    for path in (ROOT / "prometheus" / "rules").glob("*.yml"):
        groups = yaml.safe_load(path.read_text())["groups"]
        exprs = " ".join(rule["expr"] for group in groups for rule in group["rules"])
        recorded = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
        assert _unknown(_referenced(exprs), exported | recorded) == set(), path.name


def test_dashboards_are_generated_from_code() -> None:
    result = subprocess.run([sys.executable, "grafana/build.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dashboard_queries_only_name_exported_or_recorded_metrics() -> None:
    exported = _exported_names()
    recorded = set()
    for path in (ROOT / "prometheus" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            recorded.update(rule["record"] for rule in group["rules"] if "record" in rule)
    for path in (ROOT / "grafana" / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        assert dashboard["panels"], path.name
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                names = _referenced(target["expr"]) | set(_RECORDED.findall(target["expr"]))
                assert names, (path.name, panel["title"])
                assert _unknown(names, exported | recorded) == set(), (path.name, panel["title"], target["expr"])
