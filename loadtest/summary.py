"""The end of a run: k6's summary data as ``summary.json``, a one-screen text, and comparing runs.

``summary.json`` has the shape of the data k6 hands to ``handleSummary`` (js/summary.go
summarizeMetricsToObject): ``metrics`` → ``{type, contains, values, thresholds: {source: {ok}}}``
with k6's metric names (submetrics such as ``http_req_duration{name:search}`` as their own
entries), ``root_group`` with the checks, ``options.summaryTrendStats``,
``state.testRunDurationMs``; plus ``hos``, what this run was (profile, seed, target, runner,
whether a threshold aborted it). loadtest/k6/storefront.js writes the same file from k6. Pure.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from loadtest.metrics import CONTAINS, Metrics, Rate, Verdict, summary_values
from loadtest.profile import Profile
from loadtest.thresholds import METRIC_TYPES, parse_metric_name

THRESHOLDS_FAILED_EXIT: Final = 99  # k6's exit code when thresholds fail (errext/exitcodes)
REQUEST_NAMES: Final = ("search", "suggest", "product", "seller")
_EXPECTED: Final = "http_req_duration{expected_response:true}"


@dataclass(frozen=True)
class RunInfo:
    target: str
    seed: int
    runner: str
    duration_ms: float
    aborted: str | None = None  # why abortOnFail stopped the run, if it did


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # k6's group and check ids; not security


def build_summary(profile: Profile, metrics: Metrics, verdict: Verdict, run: RunInfo) -> dict[str, Any]:
    stats = profile.summary_trend_stats
    keys = set(metrics.observed())
    if "http_req_duration" in keys:
        keys.add(_EXPECTED)  # k6 always keeps this submetric
        # Per request name, as k6 shows them when thresholds name them (loadtest/k6/storefront.js does).
        for name in metrics.tag_values("http_req_duration", "name"):
            keys.update((f"http_req_duration{{name:{name}}}", f"http_req_failed{{name:{name}}}"))
    keys.update(metric.key for metric in profile.thresholds)
    data: dict[str, Any] = {}
    for key in sorted(keys):
        name, tags = parse_metric_name(key)
        entry: dict[str, Any] = {
            "type": METRIC_TYPES[name],
            "contains": CONTAINS.get(name, "default"),
            "values": summary_values(metrics.sink(name, tags), run.duration_ms, stats),
        }
        outcomes = [outcome for outcome in verdict.outcomes if outcome.metric.key == key]
        if outcomes:
            entry["thresholds"] = {outcome.threshold.source: {"ok": outcome.ok} for outcome in outcomes}
        data[key] = entry
    checks = []
    for name in metrics.tag_values("checks", "check"):
        sink = metrics.sink("checks", (("check", name),))
        assert isinstance(sink, Rate)
        path = "::" + name
        checks.append(
            {"name": name, "path": path, "id": _md5(path), "passes": sink.passes, "fails": sink.total - sink.passes}
        )
    return {
        "root_group": {"name": "", "path": "", "id": _md5(""), "groups": [], "checks": checks},
        "options": {"summaryTrendStats": list(stats), "summaryTimeUnit": "", "noColor": False},
        "state": {"isStdOutTTY": False, "isStdErrTTY": False, "testRunDurationMs": run.duration_ms},
        "metrics": data,
        "hos": {
            "profile": profile.name,
            "runner": run.runner,
            "target": run.target,
            "seed": run.seed,
            "aborted": run.aborted,
            "thresholdsFailed": len(verdict.failed),
        },
    }


# --- the one-screen text -----------------------------------------------------------------------


def _value(key: str, stat: str, value: float) -> str:
    name = parse_metric_name(key)[0]
    if stat == "rate" and METRIC_TYPES[name] == "rate":
        return f"{value * 100:.2f}%"
    if stat in ("count", "passes", "fails", "value"):
        return f"{value:g}"
    if stat == "rate":
        return f"{value:.2f}/s"
    if CONTAINS.get(name) == "time":
        return f"{value:.2f}ms" if value < 1000 else f"{value / 1000:.2f}s"
    return f"{value:.4g}"


def render(summary: Mapping[str, Any], paths: Sequence[str] = ()) -> str:
    """A one-screen summary: thresholds ✓/✗ with the observed value, requests by name, checks."""
    metrics: Mapping[str, Any] = summary["metrics"]
    hos = summary["hos"]
    stats: list[str] = summary["options"]["summaryTrendStats"]
    lines = []
    failed = hos["thresholdsFailed"]
    total = sum(len(entry.get("thresholds", {})) for entry in metrics.values())
    seconds = summary["state"]["testRunDurationMs"] / 1000
    mark = "✗" if failed or hos["aborted"] else "✓"
    verdict = f"{failed} of {total} thresholds failed" if failed else f"all {total} thresholds passed"
    lines.append(f"{mark} {hos['profile']}: {verdict} — {seconds:.1f} s against {hos['target']} (seed {hos['seed']})")
    if hos["aborted"]:
        lines.append(f"  aborted: {hos['aborted']}")
    lines.append("")
    lines.append("  THRESHOLDS")
    for key, entry in metrics.items():
        for source, result in entry.get("thresholds", {}).items():
            stat = source.split("<")[0].split(">")[0].split("=")[0].split("!")[0].strip()
            observed = entry["values"].get(stat)
            shown = f" {stat}={_value(key, stat, observed)}" if observed is not None else ""
            lines.append(f"    {'✓' if result['ok'] else '✗'} {key}: '{source}'{shown}")
    lines.append("")
    columns = [stat for stat in stats if stat != "count"]
    lines.append("  REQUESTS   " + "".join(f"{head:>10}" for head in ["count", "failed", *columns]))
    for name in (*REQUEST_NAMES, None):
        tag = f"{{name:{name}}}" if name else ""
        duration = metrics.get(f"http_req_duration{tag}")
        failed_rate = metrics.get(f"http_req_failed{tag}")
        if name and duration is None:
            continue
        if duration is None or failed_rate is None:
            continue
        count = failed_rate["values"]["passes"] + failed_rate["values"]["fails"]
        row = [f"{count:g}", f"{failed_rate['values']['rate'] * 100:.2f}%"]
        row += [_value("http_req_duration", stat, duration["values"].get(stat, math.nan)) for stat in columns]
        lines.append(f"    {name or 'all':<8}" + "".join(f"{cell:>10}" for cell in row))
    checks = summary["root_group"]["checks"]
    if checks:
        passes, fails = sum(c["passes"] for c in checks), sum(c["fails"] for c in checks)
        lines.append("")
        lines.append(f"  CHECKS  ✓ {passes}  ✗ {fails}")
        for check in checks:
            if check["fails"]:
                lines.append(f"    ✗ {check['name']}: {check['fails']} of {check['passes'] + check['fails']} failed")
    lines.append("")
    iterations = metrics.get("iterations", {}).get("values", {})
    dropped = metrics.get("dropped_iterations", {}).get("values", {}).get("count", 0)
    vus = metrics.get("vus_max", metrics.get("vus", {})).get("values", {}).get("max", 0)
    lines.append(
        f"  iterations {iterations.get('count', 0):g} ({iterations.get('rate', 0):.2f}/s), "
        f"dropped {dropped:g}, VUs max {vus:g}"
    )
    if dropped:
        lines.append(
            f"  ⚠ the arrival rate was not kept: {dropped:g} iterations found every VU busy (arrival_rate_kept)"
        )
    lines.extend(f"  {path}" for path in paths)
    return "\n".join(lines)


def exit_code(summary: Mapping[str, Any]) -> int:
    return THRESHOLDS_FAILED_EXIT if summary["hos"]["thresholdsFailed"] or summary["hos"]["aborted"] else 0


# --- comparing two runs ------------------------------------------------------------------------


def compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """Every value two summaries share, side by side with the change, and threshold flips."""
    lines = [f"{'metric':<48}{'stat':>10}{'before':>14}{'after':>14}{'change':>10}"]
    for key in sorted(set(before["metrics"]) & set(after["metrics"])):
        old, new = before["metrics"][key], after["metrics"][key]
        for stat, was in old["values"].items():
            now = new["values"].get(stat)
            if now is None:
                continue
            change = f"{(now - was) / was * 100:+.1f}%" if was else ("=" if now == was else "new")
            lines.append(f"{key:<48}{stat:>10}{_value(key, stat, was):>14}{_value(key, stat, now):>14}{change:>10}")
        for source, result in new.get("thresholds", {}).items():
            was_ok = old.get("thresholds", {}).get(source, {}).get("ok")
            if was_ok is not None and was_ok != result["ok"]:
                flip = "now passes" if result["ok"] else "now FAILS"
                lines.append(f"{key:<48}  threshold '{source}' {flip}")
    return "\n".join(lines)
