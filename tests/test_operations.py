"""Operators' files: Prometheus config and rules (checked and unit-tested by promtool) and the
Grafana dashboards (generated from code, every query naming metrics the services export)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from indexer.metrics import IndexerMetrics
from proxy.metrics import ProxyMetrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "rules"
RULE_TESTS = ROOT / "prometheus" / "tests"
OPERATIONS_GUIDE = ROOT / "docs" / "operations.md"
RUNBOOK_BASE = "https://github.com/hos-marketplace/hos-search/blob/main/docs/operations.md#"
SEVERITIES = {"page", "ticket"}  # docs/operations.md#severities
PROMTOOL = shutil.which("promtool")
# scripts/install-test-tools (make test) installs Debian's prometheus; a machine without it skips these, visibly.
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


def _rule_groups(path: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def _alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in sorted(RULES.glob("*.yml"))
        for group in _rule_groups(path)
        for rule in group["rules"]
        if "alert" in rule
    ]


def _rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS.glob("*.yml"))


_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


def _github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped,
    spaces as hyphens, and -1, -2, ... after a repeated one."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


@needs_promtool
def test_prometheus_config_and_rules_are_valid() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", "prometheus/prometheus.yml"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_and_every_unit_test_file_load_every_rule_file() -> None:
    """A rule file Prometheus does not load never fires; one the unit tests leave out is untested."""
    rule_files = {f"rules/{path.name}" for path in RULES.glob("*.yml")}
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    assert set(config["rule_files"]) == rule_files
    for path in _rule_test_files():
        loaded = {name.removeprefix("../") for name in yaml.safe_load(path.read_text())["rule_files"]}
        assert loaded == rule_files, path.name


@needs_promtool
def test_alert_rules_fire_as_their_unit_tests_say() -> None:
    assert PROMTOOL is not None
    files = [str(path.relative_to(ROOT)) for path in _rule_test_files()]
    assert files, "no promtool unit tests in prometheus/tests/"
    result = subprocess.run([PROMTOOL, "test", "rules", *files], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    # Per alert and severity (a burn-rate alert's page and ticket are two rules of one name), and
    # per test: "does not fire" is a whole scenario (a blip, a slow burn), not the minutes before
    # a `for:` runs out in a scenario where it fires.
    fired_in: dict[str, list[set[str]]] = {}  # alert name -> the severities each test expects
    for path in _rule_test_files():
        for test in yaml.safe_load(path.read_text())["tests"]:
            by_alert: dict[str, set[str]] = {}
            for case in test.get("alert_rule_test", []):
                fired = by_alert.setdefault(case["alertname"], set())
                fired.update(alert.get("exp_labels", {}).get("severity") for alert in case.get("exp_alerts") or [])
            for name, fired in by_alert.items():
                fired_in.setdefault(name, []).append(fired)
    missing = []
    for rule in _alert_rules():
        name, severity = rule["alert"], rule["labels"]["severity"]
        cases = fired_in.get(name, [])
        if not any(severity in fired for fired in cases):
            missing.append(f"{name} ({severity}): no case where it fires")
        if not any(severity not in fired for fired in cases):
            missing.append(f"{name} ({severity}): no case where it stays quiet")
    assert missing == []


def test_every_alert_has_a_severity_annotations_and_its_own_runbook_section() -> None:
    anchors = _github_anchors(OPERATIONS_GUIDE.read_text())
    rules = _alert_rules()
    assert rules
    for rule in rules:
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), (name, key)
        assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower(), name
        assert name.lower() in anchors, f"docs/operations.md has no heading for {name}"


def test_rules_only_name_metrics_the_services_export() -> None:
    exported = _exported_names()
    all_recorded: set[str] = set()
    for path in RULES.glob("*.yml"):
        groups = _rule_groups(path)
        exprs = " ".join(rule["expr"] for group in groups for rule in group["rules"])
        recorded = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
        all_recorded |= recorded
        assert _unknown(_referenced(exprs), exported | recorded) == set(), path.name
    # ... and every recorded series they read is recorded somewhere (a typo would never fire).
    for path in RULES.glob("*.yml"):
        exprs = " ".join(rule["expr"] for group in _rule_groups(path) for rule in group["rules"])
        assert set(_RECORDED.findall(exprs)) <= all_recorded, path.name


def test_dashboards_are_generated_from_code() -> None:
    result = subprocess.run([sys.executable, "grafana/build.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dashboard_queries_only_name_exported_or_recorded_metrics() -> None:
    exported = _exported_names()
    recorded: set[str] = set()
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
