"""The load profiles: read by k6's rules, judged by k6's thresholds, the same in Python and in
k6's JavaScript, and a real Locust run through ``python -m loadtest`` (what ``make load``
runs) against a proxy over the shared search catalog.

Expected values are worked out by hand from k6's documented semantics and source
(lib/executor/ramping_vus.go, ramping_arrival_rate.go, constant_arrival_rate.go,
metrics/thresholds*.go, metrics/sink.go), never computed by the code under test.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from catalog.processes import stop_process
from devstack.servers import wait_http
from devstack.stack import StackUrls
from loadtest.durations import DurationError, parse_duration
from loadtest.metrics import Metrics, Trend, evaluate_thresholds, threshold_values
from loadtest.profile import PROFILES_DIR, Profile, ProfileError, load_profile, parse_profile, profile_names
from loadtest.runner import K6_INSTALL, find_k6
from loadtest.summary import RunInfo, build_summary, exit_code, render
from loadtest.thresholds import ThresholdError, parse_expression, parse_metric_name, parse_thresholds
from loadtest.traffic import Mulberry32, QueryMix, build_queries, draw_session, vocabulary_js, vu_seed
from tests.conftest import SearchCatalog
from tests.proxy_support import proxy_env, spawn_proxy

ROOT = Path(__file__).resolve().parent.parent
K6_DIR = ROOT / "loadtest" / "k6"


def profile(raw: dict[str, Any], env: dict[str, str] | None = None) -> Profile:
    return parse_profile("test", raw, env or {})


def vus_at(p: Profile, instants_ms: list[float]) -> dict[float, int]:
    return {t: p.planned_vus_at(t) for t in instants_ms}


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("30s", 30_000),
        ("1m30s", 90_000),
        ("500ms", 500),
        ("1h", 3_600_000),
        ("1.5s", 1_500),
        ("2h45m", 9_900_000),
        ("2d", 172_800_000),
        ("1d12h", 129_600_000),
        ("100", 100),  # a bare number is milliseconds
        (250, 250),
        ("0", 0),
    ],
)
def test_durations_read_as_k6_reads_them(value: object, ms: float) -> None:
    assert parse_duration(value) == ms


@pytest.mark.parametrize("value", ["", "10x", "-5s", "1m30", "s", "1.5d", "5 s", True, None, "-100"])
def test_durations_k6_refuses_are_refused(value: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(value)


# --- what a profile plans at an instant --------------------------------------------------------


def test_ramping_vus_step_once_the_straight_line_passes_each_whole_vu() -> None:
    # 0 -> 10 over 10 s: VU k joins at k s. Hold. 10 -> 0 over 10 s: one leaves each second, the
    # first at 31 s; at 32.5 s the line is at 7.5 and 8 VUs run (steps are taken, not rounded).
    p = profile(
        {
            "vus": 0,
            "stages": [
                {"duration": "10s", "target": 10},
                {"duration": "20s", "target": 10},
                {"duration": "10s", "target": 0},
            ],
        }
    )
    assert vus_at(p, [0, 999, 1000, 2500, 9999, 10_000, 25_000, 30_999, 31_000, 32_500, 39_999, 40_000]) == {
        0: 0,
        999: 0,
        1000: 1,
        2500: 2,
        9999: 9,
        10_000: 10,
        25_000: 10,
        30_999: 10,
        31_000: 9,
        32_500: 8,
        39_999: 1,
        40_000: 0,  # the executor has ended
    }
    assert p.duration_ms == 40_000


def test_stages_start_from_one_vu_unless_vus_sets_the_start() -> None:
    # k6's stages shortcut starts at options.vus, which defaults to 1: 1 -> 5 over 4 s.
    p = profile({"stages": [{"duration": "4s", "target": 5}]})
    assert vus_at(p, [0, 999, 1000, 2000, 3999]) == {0: 1, 999: 1, 1000: 2, 2000: 3, 3999: 4}
    assert profile({"vus": 3, "stages": [{"duration": "4s", "target": 5}]}).planned_vus_at(0) == 3


def test_uneven_ramps_and_zero_length_stages() -> None:
    # 0 -> 2 over 3 s: the first VU at 1.5 s. A 0 s stage jumps at its instant.
    p = profile(
        {
            "vus": 0,
            "stages": [
                {"duration": "3s", "target": 2},
                {"duration": "2s", "target": 2},
                {"duration": "0s", "target": 6},
                {"duration": "1s", "target": 6},
            ],
        }
    )
    assert vus_at(p, [1499, 1500, 2999, 3000, 4999, 5000, 5999]) == {
        1499: 0,
        1500: 1,
        2999: 1,
        3000: 2,
        4999: 2,
        5000: 6,
        5999: 6,
    }


def test_ramping_arrival_rate_starts_iteration_i_where_the_area_reaches_i() -> None:
    # 0 -> 10 iterations/s over 10 s: the rate at t is t per second, the area t²/2, so iteration
    # i starts at sqrt(2 i) s, 50 of them, the last at 10 s.
    p = profile(
        {
            "scenarios": {
                "ramp": {
                    "executor": "ramping-arrival-rate",
                    "preAllocatedVUs": 5,
                    "stages": [{"duration": "10s", "target": 10}],
                }
            }
        }
    )
    scenario = p.scenarios[0]
    offsets = list(scenario.arrival_offsets())
    assert len(offsets) == 50
    assert offsets[0] == pytest.approx(1414.2136, abs=1e-3)
    assert offsets[1] == pytest.approx(2000)
    assert offsets[7] == pytest.approx(4000)
    assert offsets[-1] == pytest.approx(10_000)
    assert scenario.rate_at(5000) == pytest.approx(5.0)
    assert scenario.rate_at(2500) == pytest.approx(2.5)
    assert p.planned_vus_at(5000) == 5  # arrival rates plan their pre-allocated VUs


def test_ramping_arrival_rate_holds_then_ramps_down() -> None:
    # 2/s held for 2 s: at 0.5, 1, 1.5, 2 s. Then 2 -> 0 over 2 s: the area 2τ - τ²/2 reaches 1 at
    # τ = 2 - √2 (2.5858 s) and 2 at τ = 2 (4 s).
    p = profile(
        {
            "scenarios": {
                "down": {
                    "executor": "ramping-arrival-rate",
                    "startRate": 2,
                    "timeUnit": "1s",
                    "preAllocatedVUs": 1,
                    "stages": [{"duration": "2s", "target": 2}, {"duration": "2s", "target": 0}],
                }
            }
        }
    )
    assert list(p.scenarios[0].arrival_offsets()) == pytest.approx([500, 1000, 1500, 2000, 2585.786, 4000], abs=1e-3)


def test_constant_arrival_rate_starts_one_every_time_unit_over_rate_from_zero() -> None:
    four = profile(
        {"scenarios": {"c": {"executor": "constant-arrival-rate", "rate": 4, "duration": "2s", "preAllocatedVUs": 2}}}
    )
    assert list(four.scenarios[0].arrival_offsets()) == [0, 250, 500, 750, 1000, 1250, 1500, 1750]
    per_minute = profile(
        {
            "scenarios": {
                "c": {
                    "executor": "constant-arrival-rate",
                    "rate": 30,
                    "timeUnit": "1m",
                    "duration": "5s",
                    "preAllocatedVUs": 1,
                    "startTime": "10s",
                }
            }
        }
    )
    scenario = per_minute.scenarios[0]
    assert list(scenario.arrival_offsets()) == [0, 2000, 4000]
    assert scenario.rate_at(9_999) == 0  # before its startTime
    assert scenario.rate_at(12_000) == pytest.approx(0.5)
    assert per_minute.duration_ms == 15_000


def test_environment_variables_set_the_soak_length() -> None:
    assert load_profile("soak", {}).duration_ms == 300_000  # 5m by default
    assert load_profile("soak", {"SOAK_DURATION": "2h"}).duration_ms == 7_200_000
    with pytest.raises(ProfileError, match="NOT_SET"):
        profile({"duration": "${NOT_SET}"})


@pytest.mark.parametrize(
    "raw",
    [
        {"stages": [{"duration": "1s", "target": 1}], "duration": "5s"},
        {"scenarios": {"a": {"executor": "shared-iterations"}}},
        {"scenarios": {"a": {"executor": "constant-arrival-rate", "rate": 1, "duration": "1s"}}},  # no preAllocatedVUs
        {"scenarios": {"a": {"executor": "ramping-vus", "stages": [{"duration": "1s"}], "typo": 1}}},
        {"scenarios": {"a": {"executor": "ramping-arrival-rate", "preAllocatedVUs": 5, "maxVUs": 2, "stages": []}}},
        {"thresholds": {"http_req_duration": ["rate<0.1"]}},  # a trend has no rate
        {"thresholds": {"data_received": ["count>0"]}},  # not recorded here
        {"iterations": 10},
        {"unknown_option": 1},
    ],
)
def test_profiles_k6_or_this_runner_would_refuse_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ProfileError):
        profile(raw)


def test_every_shipped_profile_loads() -> None:
    assert set(profile_names()) >= {"smoke", "average", "stress", "spike", "soak", "breakpoint", "ratelimit"}
    for name in profile_names():
        p = load_profile(name, {})
        assert p.description, f"{name} says which question it answers"
        p.only_scenario()  # the Locust runner can run it


# --- thresholds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "method", "percentile", "operator", "value"),
    [
        ("p(95)<100", "p", 95.0, "<", 100.0),
        ("p(99.9) <= 250", "p", 99.9, "<=", 250.0),
        ("avg<=200", "avg", None, "<=", 200.0),
        ("rate<0.01", "rate", None, "<", 0.01),
        ("count>10", "count", None, ">", 10.0),
        ("med<50", "med", None, "<", 50.0),
        ("max<1000", "max", None, "<", 1000.0),
        ("min>0.5", "min", None, ">", 0.5),
        ("rate>=0.99", "rate", None, ">=", 0.99),
        ("value == 3", "value", None, "==", 3.0),
        ("rate===1", "rate", None, "===", 1.0),
        ("count != 0", "count", None, "!=", 0.0),
    ],
)
def test_threshold_expressions_parse_as_k6_parses_them(
    source: str, method: str, percentile: float | None, operator: str, value: float
) -> None:
    expression = parse_expression(source)
    assert (expression.method, expression.percentile, expression.operator, expression.value) == (
        method,
        percentile,
        operator,
        value,
    )


@pytest.mark.parametrize("source", ["p95<100", "p(101)<1", "p(-1)<1", "avg<", "foo<1", "rate<abc", "avg 100", "<100"])
def test_malformed_threshold_expressions_are_refused(source: str) -> None:
    with pytest.raises(ThresholdError):
        parse_expression(source)


def test_metric_names_with_tags_select_a_submetric() -> None:
    assert parse_metric_name("http_req_duration{name:search}") == ("http_req_duration", (("name", "search"),))
    assert parse_metric_name("http_req_duration{ name : 'search' ,method:GET}") == (
        "http_req_duration",
        (("name", "search"), ("method", "GET")),
    )
    assert parse_metric_name("checks{check:429 carries Retry-After}")[1] == (("check", "429 carries Retry-After"),)
    for bad in ("http_req_duration{name:search", "http_req_duration{name}", "x{a:b}c", "x}a:b{"):
        with pytest.raises(ThresholdError):
            parse_metric_name(bad)


def test_trend_percentiles_interpolate_between_the_nearest_ranks() -> None:
    # k6's TrendSink.P: i = p (n - 1); for 1..10, p(95) -> i = 8.55 -> 9 + 0.55 = 9.55.
    trend = Trend()
    for value in [10, 3, 7, 1, 5, 2, 9, 4, 8, 6]:  # order does not matter
        trend.add(value)
    assert trend.percentile(0.95) == pytest.approx(9.55)
    assert trend.percentile(0.90) == pytest.approx(9.1)
    assert trend.percentile(0.5) == pytest.approx(5.5)
    assert trend.percentile(0.0) == 1
    assert trend.percentile(1.0) == 10
    assert (trend.avg, trend.low, trend.high) == (5.5, 1, 10)
    single = Trend()
    single.add(7)
    assert single.percentile(0.99) == 7
    assert Trend().percentile(0.95) == 0  # no samples: 0


def _metrics(samples: list[tuple[str, float, dict[str, str]]]) -> Metrics:
    metrics = Metrics()
    for name, value, tags in samples:
        metrics.add(name, value, tuple(sorted(tags.items())))
    return metrics


def _outcomes(raw: dict[str, Any], metrics: Metrics, elapsed_ms: float, **kwargs: Any) -> dict[tuple[str, str], bool]:
    verdict = evaluate_thresholds(parse_thresholds(raw), metrics, elapsed_ms, **kwargs)
    return {(o.metric.key, o.threshold.source): o.ok for o in verdict.outcomes}


def test_thresholds_pass_and_fail_on_k6_aggregations() -> None:
    metrics = _metrics(
        [("http_req_duration", float(ms), {"name": "search"}) for ms in range(1, 11)]
        + [("http_req_duration", 500.0, {"name": "suggest"})]
        + [("checks", 1, {"check": "a"})] * 3
        + [("checks", 0, {"check": "b"})]
        + [("http_reqs", 1, {})] * 12
    )
    outcomes = _outcomes(
        {
            "http_req_duration{name:search}": ["p(95)<9.6", "p(95)<9.5", "avg<=5.5", "med<5", "max<10", "min>0.5"],
            "http_req_duration": ["max<500"],  # the suggestion counts here
            "checks": ["rate>0.7", "rate==0.75", "rate>0.8"],
            "checks{check:a}": ["rate==1"],
            "http_reqs": ["count>10", "rate<2"],  # 12 requests in 4 s: 3/s
        },
        metrics,
        4000,
    )
    assert outcomes == {
        ("http_req_duration{name:search}", "p(95)<9.6"): True,
        ("http_req_duration{name:search}", "p(95)<9.5"): False,
        ("http_req_duration{name:search}", "avg<=5.5"): True,
        ("http_req_duration{name:search}", "med<5"): False,
        ("http_req_duration{name:search}", "max<10"): False,
        ("http_req_duration{name:search}", "min>0.5"): True,
        ("http_req_duration", "max<500"): False,
        ("checks", "rate>0.7"): True,
        ("checks", "rate==0.75"): True,
        ("checks", "rate>0.8"): False,
        ("checks{check:a}", "rate==1"): True,
        ("http_reqs", "count>10"): True,
        ("http_reqs", "rate<2"): False,
    }


def test_metrics_without_samples_are_judged_as_k6_judges_them() -> None:
    # A rate with no samples has no rate: its thresholds pass (runNoTaint). An empty trend is 0.
    outcomes = _outcomes(
        {"checks": ["rate>0.99"], "http_req_duration": ["p(95)<100", "avg>1"], "iterations": ["count>0"]},
        Metrics(),
        1000,
    )
    assert outcomes == {
        ("checks", "rate>0.99"): True,
        ("http_req_duration", "p(95)<100"): True,
        ("http_req_duration", "avg>1"): False,
        ("iterations", "count>0"): False,
    }
    # During the run, metrics without samples are not evaluated at all.
    assert _outcomes({"iterations": ["count>0"]}, Metrics(), 1000, during_run=True) == {}
    rate_values = threshold_values(Metrics().sink("checks"), 1000, parse_thresholds({"checks": ["rate>0"]})[0])
    assert rate_values == {}


def test_abort_on_fail_waits_for_delay_abort_eval() -> None:
    slow = _metrics([("http_req_duration", 900.0, {})])
    raw = {"http_req_duration": [{"threshold": "p(95)<500", "abortOnFail": True, "delayAbortEval": "10s"}]}
    assert not evaluate_thresholds(parse_thresholds(raw), slow, 5_000, during_run=True).abort
    assert evaluate_thresholds(parse_thresholds(raw), slow, 10_001, during_run=True).abort
    immediate = {"http_req_duration": [{"threshold": "p(95)<500", "abortOnFail": True}]}
    assert evaluate_thresholds(parse_thresholds(immediate), slow, 1, during_run=True).abort
    plain = {"http_req_duration": ["p(95)<500"]}
    assert not evaluate_thresholds(parse_thresholds(plain), slow, 60_000, during_run=True).abort


def test_summary_has_k6_shape_and_a_failed_threshold_exits_99() -> None:
    p = profile({"thresholds": {"http_req_duration": ["p(95)<0.001"], "checks": ["rate>0.5"]}})
    metrics = _metrics(
        [
            ("http_req_duration", 12.0, {"name": "search", "expected_response": "true"}),
            ("http_req_failed", 0, {"name": "search"}),
            ("http_reqs", 1, {"name": "search"}),
            ("checks", 1, {"check": "search status 200"}),
        ]
    )
    verdict = evaluate_thresholds(p.thresholds, metrics, 2000)
    summary = build_summary(p, metrics, verdict, RunInfo("http://x", 1, "test", 2000))
    duration = summary["metrics"]["http_req_duration"]
    assert (duration["type"], duration["contains"]) == ("trend", "time")
    assert set(duration["values"]) == {"avg", "min", "med", "max", "p(90)", "p(95)"}
    assert duration["thresholds"] == {"p(95)<0.001": {"ok": False}}
    assert summary["metrics"]["checks"]["values"] == {"rate": 1.0, "passes": 1.0, "fails": 0.0}
    assert summary["metrics"]["http_reqs"]["values"] == {"count": 1.0, "rate": 0.5}
    assert "http_req_duration{name:search}" in summary["metrics"]
    assert summary["root_group"]["checks"][0]["path"] == "::search status 200"
    assert exit_code(summary) == 99
    verdict_ok = evaluate_thresholds(profile({"thresholds": {"checks": ["rate>0.5"]}}).thresholds, metrics, 2000)
    assert exit_code(build_summary(p, metrics, verdict_ok, RunInfo("http://x", 1, "test", 2000))) == 0


# --- traffic -----------------------------------------------------------------------------------


def test_the_same_seed_draws_the_same_sessions() -> None:
    mix = QueryMix.of(build_queries())
    first = [draw_session(Mulberry32(vu_seed(7, vu)), mix) for vu in (1, 2, 3)]
    again = [draw_session(Mulberry32(vu_seed(7, vu)), mix) for vu in (1, 2, 3)]
    other = [draw_session(Mulberry32(vu_seed(8, vu)), mix) for vu in (1, 2, 3)]
    assert first == again
    assert first != other
    assert len({plan.query for plan in first}) > 1  # VUs differ from one another


def test_queries_follow_zipf_weights_over_the_catalog_vocabulary() -> None:
    queries = build_queries()
    assert queries[:2] == ["harry potter", "star wars"]  # the most popular fandoms lead
    mix = QueryMix.of(queries)
    rng = Mulberry32(1)
    draws = [mix.pick(rng) for _ in range(20_000)]
    harmonic = sum(1 / rank for rank in range(1, len(queries) + 1))
    assert draws.count(queries[0]) / len(draws) == pytest.approx(1 / harmonic, rel=0.1)
    assert draws.count(queries[1]) / len(draws) == pytest.approx(0.5 / harmonic, rel=0.15)


def test_k6_vocabulary_is_generated_from_the_catalog() -> None:
    assert (K6_DIR / "vocabulary.js").read_text(encoding="utf-8") == vocabulary_js(build_queries()), (
        "loadtest/k6/vocabulary.js is stale: python -m loadtest --write-vocabulary"
    )


# --- Python and k6's JavaScript read every profile the same way ---------------------------------

_NODE_DRIVER = r"""
import fs from 'fs';
import {
  loadProfile, plannedVUsAt, rateAt, arrivalOffsets, durationMs, parseDuration, parseExpression,
} from './profile.js';
import { mulberry32, vuSeed, queryMix, drawSession } from './traffic.js';

const input = JSON.parse(fs.readFileSync(0, 'utf8'));
const attempt = (fn) => { try { return fn(); } catch (error) { return { error: true }; } };
const out = { profiles: {}, durations: {}, expressions: {}, sessions: [] };
for (const [name, spec] of Object.entries(input.profiles)) {
  out.profiles[name] = attempt(() => {
    const p = loadProfile(name, spec.raw, input.env);
    return {
      durationMs: durationMs(p),
      scenarios: p.scenarios.map((s) => ({
        name: s.name, executor: s.executor, exec: s.exec, startMs: s.startMs,
        vus: spec.instants.map((t) => plannedVUsAt(s, t)),
        rate: spec.instants.map((t) => rateAt(s, t)),
        arrivals: arrivalOffsets(s, 300),
      })),
      thresholds: p.thresholds.map((m) => ({
        key: m.key, metric: m.metric, tags: m.tags,
        thresholds: m.thresholds.map((t) => ({
          source: t.source, method: t.expression.method, percentile: t.expression.percentile,
          operator: t.expression.operator, value: t.expression.value, sinkKey: t.expression.sinkKey,
          abortOnFail: t.abortOnFail, delayAbortEvalMs: t.delayAbortEvalMs,
        })),
      })),
    };
  });
}
for (const text of input.durations) out.durations[text] = attempt(() => parseDuration(text));
for (const text of input.expressions) out.expressions[text] = attempt(() => {
  const e = parseExpression(text);
  return [e.method, e.percentile, e.operator, e.value];
});
const mix = queryMix();
for (const [seed, vu] of input.seeds) {
  const rng = mulberry32(vuSeed(seed, vu));
  const sessions = [];
  for (let i = 0; i < 5; i += 1) sessions.push(drawSession(rng, mix));
  out.sessions.push(sessions);
}
process.stdout.write(JSON.stringify(out));
"""

# Edge cases beyond the shipped profiles: both sides must agree on these too.
_EXTRA_PROFILES: dict[str, dict[str, Any]] = {
    "uneven": {
        "vus": 0,
        "stages": [{"duration": "3s", "target": 2}, {"duration": "0s", "target": 7}, {"duration": "7s", "target": 3}],
    },
    "default_start": {"stages": [{"duration": "1m", "target": 13}, {"duration": "90s", "target": 0}]},
    "constant_vus": {"vus": 4, "duration": "3s"},
    "delayed_arrivals": {
        "scenarios": {
            "late": {
                "executor": "ramping-arrival-rate",
                "startTime": "2s",
                "startRate": 3,
                "timeUnit": "2s",
                "preAllocatedVUs": 2,
                "stages": [
                    {"duration": "5s", "target": 11},
                    {"duration": "3s", "target": 11},
                    {"duration": "4s", "target": 0},
                ],
            }
        },
        "thresholds": {
            "http_req_duration{ name : 'search' }": [
                {"threshold": "p(99.9) <= 1e3", "abortOnFail": True, "delayAbortEval": "1m30s"}
            ]
        },
    },
    "bad_threshold": {"thresholds": {"checks": ["p(95)<1"]}},
    "bad_executor": {"scenarios": {"x": {"executor": "externally-controlled"}}},
    "missing_env": {"duration": "${NOT_SET_ANYWHERE}"},
}
_DURATIONS = ["30s", "1m30s", "500ms", "1.5h", "2d3h", "100us", "0", "250", "1e3", "10x", "", "-1s", "1.5d", "4 s"]
_EXPRESSIONS = [
    "p(95)<100",
    "p(99.9)<=1e3",
    " avg >= 2 ",
    "rate===1",
    "count!=0",
    "p(101)<1",
    "avg<",
    "med",
    "value>-3.5e-2",
]


def _instants(p: Profile) -> list[float]:
    end = p.duration_ms
    instants = {round(end * i / 240, 3) for i in range(242)}
    for scenario in p.scenarios:
        edge = scenario.start_ms
        for stage in scenario.stages:
            edge += stage.duration_ms
            instants.update((edge - 1, edge, edge + 1))
        instants.update((scenario.start_ms - 1, scenario.start_ms, scenario.end_ms - 1, scenario.end_ms))
    return sorted(t for t in instants if t >= 0)


def _python_side(raws: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"profiles": {}, "durations": {}, "expressions": {}, "sessions": []}
    instants: dict[str, list[float]] = {}
    for name, raw in raws.items():
        try:
            p = parse_profile(name, raw, env)
        except ProfileError:
            out["profiles"][name] = {"error": True}
            instants[name] = [0.0]
            continue
        instants[name] = _instants(p)
        out["profiles"][name] = {
            "durationMs": p.duration_ms,
            "scenarios": [
                {
                    "name": s.name,
                    "executor": s.executor,
                    "exec": s.exec,
                    "startMs": s.start_ms,
                    "vus": [s.planned_vus_at(t) for t in instants[name]],
                    "rate": [s.rate_at(t) for t in instants[name]],
                    "arrivals": list(_take(s.arrival_offsets(), 300)),
                }
                for s in p.scenarios
            ],
            "thresholds": [
                {
                    "key": m.key,
                    "metric": m.metric,
                    "tags": [list(tag) for tag in m.tags],
                    "thresholds": [
                        {
                            "source": t.source,
                            "method": t.expression.method,
                            "percentile": t.expression.percentile,
                            "operator": t.expression.operator,
                            "value": t.expression.value,
                            "sinkKey": t.expression.sink_key,
                            "abortOnFail": t.abort_on_fail,
                            "delayAbortEvalMs": t.delay_abort_eval_ms,
                        }
                        for t in m.thresholds
                    ],
                }
                for m in p.thresholds
            ],
        }
    for text in _DURATIONS:
        try:
            out["durations"][text] = parse_duration(text)
        except DurationError:
            out["durations"][text] = {"error": True}
    for text in _EXPRESSIONS:
        try:
            e = parse_expression(text)
            out["expressions"][text] = [e.method, e.percentile, e.operator, e.value]
        except ThresholdError:
            out["expressions"][text] = {"error": True}
    mix = QueryMix.of(build_queries())
    for seed, vu in _SEEDS:
        rng = Mulberry32(vu_seed(seed, vu))
        out["sessions"].append([_plan_json(draw_session(rng, mix)) for _ in range(5)])
    out["instants"] = instants
    return out


_SEEDS = [(1, 1), (1, 2), (42, 7), (2**31 + 5, 1000)]


def _take(iterator: Iterator[float], n: int) -> Iterator[float]:
    for _, value in zip(range(n), iterator, strict=False):
        yield value


def _plan_json(plan: Any) -> dict[str, Any]:
    return {
        "query": plan.query,
        "keystrokes": [list(k) for k in plan.keystrokes],
        "thinks": list(plan.thinks),
        "facetRoll": plan.facet_roll,
        "facetKindRoll": plan.facet_kind_roll,
        "facetPickRoll": plan.facet_pick_roll,
        "pageRoll": plan.page_roll,
        "sortRoll": plan.sort_roll,
        "opens": plan.opens,
        "openRolls": list(plan.open_rolls),
        "sellerRoll": plan.seller_roll,
    }


def _same(a: Any, b: Any, where: str = "") -> None:
    """Equal, numbers compared exactly (both sides do the same IEEE arithmetic)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))}"
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: python {a!r} != node {b!r}"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_python_and_k6_javascript_read_every_profile_the_same_way(tmp_path: Path) -> None:
    raws = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(PROFILES_DIR.glob("*.json"))}
    raws.update(_EXTRA_PROFILES)
    env = {"SOAK_DURATION": "90s"}
    python = _python_side(raws, env)
    for source in K6_DIR.glob("*.js"):
        shutil.copy(source, tmp_path / source.name)
    (tmp_path / "package.json").write_text('{"type": "module"}', encoding="utf-8")  # .js files as ES modules
    (tmp_path / "driver.js").write_text(_NODE_DRIVER, encoding="utf-8")
    node_input = {
        "profiles": {name: {"raw": raw, "instants": python["instants"][name]} for name, raw in raws.items()},
        "env": env,
        "durations": _DURATIONS,
        "expressions": _EXPRESSIONS,
        "seeds": _SEEDS,
    }
    result = subprocess.run(
        ["node", "driver.js"], cwd=tmp_path, input=json.dumps(node_input), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    node = json.loads(result.stdout, parse_constant=float)
    del python["instants"]
    for name in raws:
        _same(python["profiles"][name], node["profiles"][name], name)
    assert python["profiles"]["bad_threshold"] == {"error": True}
    assert python["profiles"]["missing_env"] == {"error": True}
    assert python["profiles"]["soak"]["durationMs"] == 90_000
    _same(python["durations"], node["durations"], "durations")
    _same(python["expressions"], node["expressions"], "expressions")
    _same(python["sessions"], node["sessions"], "sessions")


_NODE_SUMMARY = """
import { readFileSync } from 'node:fs';
import { textSummary } from './summary.js';
const data = JSON.parse(readFileSync(0, 'utf8'));
process.stdout.write(textSummary(data, data.hos));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_k6_text_summary_reads_as_the_locust_runners(tmp_path: Path) -> None:
    """summary.js (k6's one-screen summary, written here instead of a network import) renders a
    summary exactly as loadtest/summary.py does: failed threshold, request rows, failed checks."""
    p = profile(
        {
            "summaryTrendStats": ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)", "count"],
            "thresholds": {
                "http_req_duration": ["p(95)<0.001"],
                "http_req_duration{name:search}": ["p(95)<1000"],
                "checks": ["rate>0.5"],
                "iterations": ["count>0"],
            },
        }
    )
    samples: list[tuple[str, float, dict[str, str]]] = []
    for i, (name, ms) in enumerate([("search", 12.5), ("search", 1830.0), ("suggest", 3.25), ("product", 41.0)]):
        samples += [
            ("http_req_duration", ms, {"name": name, "expected_response": "true"}),
            ("http_req_failed", float(i == 3), {"name": name}),
            ("http_reqs", 1, {"name": name}),
            ("checks", float(i != 3), {"check": f"{name} status 200"}),
        ]
    samples += [("iterations", 1, {}), ("iterations", 1, {}), ("vus", 2, {}), ("vus_max", 2, {})]
    metrics = _metrics(samples)
    verdict = evaluate_thresholds(p.thresholds, metrics, 4000)
    summary = build_summary(p, metrics, verdict, RunInfo("http://127.0.0.1:8080", 7, "k6", 4000))
    expected = render(summary) + "\n"
    assert "✗ test: 2 of 4 thresholds failed" in expected and "✗ product status 200: 1 of 1 failed" in expected
    for source in K6_DIR.glob("*.js"):
        shutil.copy(source, tmp_path / source.name)
    (tmp_path / "package.json").write_text('{"type": "module"}', encoding="utf-8")
    (tmp_path / "driver.js").write_text(_NODE_SUMMARY, encoding="utf-8")
    result = subprocess.run(
        ["node", "driver.js"], cwd=tmp_path, input=json.dumps(summary), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


# --- end to end: python -m loadtest (make load) against a real proxy -----------------------


@pytest.fixture(scope="module")
def load_proxy(search_catalog: SearchCatalog, stack_urls: StackUrls) -> Iterator[str]:
    """A 2-worker proxy over the shared search catalog, rate limiting off (as make load runs it)."""
    proc, url = spawn_proxy(proxy_env(search_catalog, stack_urls, CACHE_ENABLED="true"), workers=2)
    try:
        assert wait_http(url + "/readyz", proc, 60), "the proxy did not get ready"  # type: ignore[arg-type]
        yield url
    finally:
        stop_process(proc, 20)


def run_load(
    profile_arg: str, url: str, out: Path, timeout: float = 120, *, k6: bool = False
) -> tuple[int, dict[str, Any], str]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "loadtest", "--profile", profile_arg, "--url", url, "--out", str(out), *(["--k6"] * k6)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr + f"\n(took {time.monotonic() - started:.1f} s)"
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.exists() else {}
    return result.returncode, summary, output


def write_profile(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    return str(path)


def test_smoke_profile_passes_and_writes_a_k6_summary_and_html_report(load_proxy: str, tmp_path: Path) -> None:
    code, summary, output = run_load("smoke", load_proxy, tmp_path)
    assert code == 0, output
    metrics = summary["metrics"]
    for name, kind in [
        ("http_reqs", "counter"),
        ("http_req_duration", "trend"),
        ("http_req_failed", "rate"),
        ("checks", "rate"),
        ("iterations", "counter"),
        ("vus", "gauge"),
    ]:
        assert metrics[name]["type"] == kind, name
    assert {"avg", "min", "med", "max", "p(90)", "p(95)"} <= set(metrics["http_req_duration"]["values"])
    assert metrics["http_req_duration{name:search}"]["thresholds"] == {"p(95)<1000": {"ok": True}}
    assert {"search", "suggest", "product"} <= {
        key[len("http_req_duration{name:") : -1] for key in metrics if key.startswith("http_req_duration{name:")
    }
    assert metrics["vus"]["values"]["max"] == 2
    assert summary["hos"]["thresholdsFailed"] == 0
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert "✓ smoke: all 5 thresholds passed" in output


def test_a_threshold_that_cannot_be_met_exits_99(load_proxy: str, tmp_path: Path) -> None:
    raw = {
        "hos": {"description": "impossible", "thinkTimeScale": 0.05},
        "stages": [{"duration": "1s", "target": 1}, {"duration": "3s", "target": 1}],
        "thresholds": {"http_req_duration": ["p(95)<0.001"], "http_req_failed": ["rate<0.5"]},
    }
    code, summary, output = run_load(write_profile(tmp_path, raw), load_proxy, tmp_path)
    assert code == 99, output
    assert summary["metrics"]["http_req_duration"]["thresholds"] == {"p(95)<0.001": {"ok": False}}
    assert summary["metrics"]["http_req_failed"]["thresholds"] == {"rate<0.5": {"ok": True}}
    assert "✗ http_req_duration: 'p(95)<0.001'" in output


def test_abort_on_fail_stops_the_run_early_and_exits_99(load_proxy: str, tmp_path: Path) -> None:
    raw = {
        "hos": {"description": "aborts", "thinkTimeScale": 0.05},
        "stages": [{"duration": "1s", "target": 1}, {"duration": "60s", "target": 1}],
        "thresholds": {"http_req_duration": [{"threshold": "p(95)<0.001", "abortOnFail": True}]},
    }
    started = time.monotonic()
    code, summary, output = run_load(write_profile(tmp_path, raw), load_proxy, tmp_path)
    assert code == 99, output
    assert time.monotonic() - started < 30, output  # not the profile's 61 s
    assert summary["hos"]["aborted"], output
    assert summary["state"]["testRunDurationMs"] < 20_000


def test_an_arrival_rate_profile_starts_iterations_on_k6s_schedule(load_proxy: str, tmp_path: Path) -> None:
    raw = {
        "hos": {"description": "open model", "thinkTimeScale": 0.05},
        "scenarios": {
            "open": {
                "executor": "constant-arrival-rate",
                "rate": 5,
                "duration": "4s",
                "preAllocatedVUs": 4,
                "maxVUs": 20,
            }
        },
        "thresholds": {"checks": ["rate>0.99"], "http_req_failed": ["rate<0.01"]},
    }
    code, summary, output = run_load(write_profile(tmp_path, raw), load_proxy, tmp_path)
    assert code == 0, output
    started = summary["metrics"]["iterations"]["values"]["count"]
    dropped = summary["metrics"].get("dropped_iterations", {}).get("values", {}).get("count", 0)
    assert 15 <= started + dropped <= 20, output  # 5/s for 4 s, from 0 s: 20 scheduled
    checks = {check["name"]: check for check in summary["root_group"]["checks"]}
    assert checks["arrival_rate_kept"]["passes"] >= 15


def test_ratelimit_profile_finds_429s_where_the_policy_says(
    search_catalog: SearchCatalog, stack_urls: StackUrls, tmp_path: Path
) -> None:
    limits = load_profile("ratelimit", {}).proxy_env
    proc, url = spawn_proxy(proxy_env(search_catalog, stack_urls, **limits), workers=2)
    try:
        assert wait_http(url + "/readyz", proc, 60)  # type: ignore[arg-type]
        code, summary, output = run_load("ratelimit", url, tmp_path)
    finally:
        stop_process(proc, 20)
    assert code == 0, output
    checks = {check["name"]: (check["passes"], check["fails"]) for check in summary["root_group"]["checks"]}
    assert checks == {
        "a 429 arrives": (1, 0),
        "429 carries RateLimit-Policy": (1, 0),
        "quota matches RateLimit-Policy": (1, 0),
        "429 carries Retry-After": (1, 0),
        "429 is problem+json": (1, 0),
        "admitted after Retry-After": (1, 0),
    }
    assert summary["metrics"]["http_reqs"]["values"]["count"] >= 62  # the quota, the 429, the retry


# --- the same profiles under the real k6 (a Go binary: go install go.k6.io/k6@v1.8.1) ------------

K6 = find_k6(os.environ)
needs_k6 = pytest.mark.skipif(
    K6 is None, reason=f"k6 is not installed (neither on PATH nor in Go's bin directory): {K6_INSTALL}"
)
_REMOTE_IMPORT = re.compile(r"""^\s*import\b[^;]*?\bfrom\s*['"](?:https?:)?//""", re.MULTILINE)


def test_the_k6_scripts_import_nothing_from_the_network() -> None:
    """A remote import fails before the first request on a machine without internet."""
    scripts = sorted(K6_DIR.glob("*.js"))
    assert {"storefront.js", "summary.js", "profile.js", "traffic.js"} <= {path.name for path in scripts}
    assert _REMOTE_IMPORT.search("import { textSummary } from 'https://jslib.k6.io/k6-summary/0.0.2/index.js';")
    for script in scripts:
        assert not _REMOTE_IMPORT.search(script.read_text(encoding="utf-8")), script.name


@needs_k6
def test_smoke_profile_passes_under_the_real_k6_into_a_new_folder(load_proxy: str, tmp_path: Path) -> None:
    out = tmp_path / "not" / "yet"  # k6 itself creates no folder for its summary
    code, summary, output = run_load("smoke", load_proxy, out, k6=True)
    assert code == 0, output
    assert summary["hos"] == {
        "profile": "smoke",
        "runner": "k6",
        "target": load_proxy,
        "seed": 1,
        "aborted": None,
        "thresholdsFailed": 0,
    }
    metrics = summary["metrics"]
    assert metrics["http_req_duration{name:search}"]["thresholds"] == {"p(95)<1000": {"ok": True}}
    assert metrics["iterations"]["values"]["count"] > 0
    assert metrics["http_reqs"]["values"]["count"] > metrics["iterations"]["values"]["count"]
    assert "✓ smoke: all 5 thresholds passed" in output  # the script's own text summary
    assert "could not open" not in output, output


@needs_k6
def test_a_threshold_that_cannot_be_met_exits_99_under_the_real_k6(load_proxy: str, tmp_path: Path) -> None:
    raw = {
        "hos": {"description": "impossible", "thinkTimeScale": 0.05},
        "stages": [{"duration": "1s", "target": 1}, {"duration": "3s", "target": 1}],
        "thresholds": {"http_req_duration": ["p(95)<0.001"], "http_req_failed": ["rate<0.5"]},
    }
    code, summary, output = run_load(write_profile(tmp_path, raw), load_proxy, tmp_path / "out", k6=True)
    assert code == 99, output
    assert summary["metrics"]["http_req_duration"]["thresholds"] == {"p(95)<0.001": {"ok": False}}
    assert summary["metrics"]["http_req_failed"]["thresholds"] == {"rate<0.5": {"ok": True}}
    assert summary["hos"]["thresholdsFailed"] == 1
    assert "✗ profile: 1 of 2 thresholds failed" in output
    assert "✗ http_req_duration: 'p(95)<0.001'" in output
