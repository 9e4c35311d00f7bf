"""k6 thresholds: parsing ``"p(95)<100"`` and ``"http_req_duration{name:search}"``, and passing
or failing them on a run's metrics exactly as k6 does (metrics/thresholds*.go).

- An expression is ``<aggregation> <operator> <number>``: the operators are tried in k6's order
  (``<=``, ``<``, ``>=``, ``>``, ``===``, ``==``, ``!=``) and the first that splits the text
  into two non-empty sides wins; the aggregation is ``avg``, ``min``, ``max``, ``med``,
  ``p(N)`` (0 ≤ N ≤ 100) for trends, ``rate`` for rates, ``count`` and ``rate`` for counters,
  ``value`` for gauges.
- A threshold whose aggregation has no value is *passed*: a rate with no samples has no
  ``rate``, so ``checks: ["rate>0.99"]`` passes a run with no checks (k6's ``runNoTaint``).
  Trends with no samples count as 0 everywhere.
- ``abortOnFail`` stops the run when the threshold fails during it, but not before
  ``delayAbortEval`` has passed; during the run, metrics without samples are not evaluated.

Pure: samples come in through :mod:`loadtest.metrics`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from loadtest.durations import DurationError, parse_duration

# What the runners record, and each metric's k6 type (k6 refuses thresholds on unknown metrics).
METRIC_TYPES: Final = {
    "http_reqs": "counter",
    "http_req_duration": "trend",
    "http_req_failed": "rate",
    "checks": "rate",
    "iterations": "counter",
    "iteration_duration": "trend",
    "dropped_iterations": "counter",
    "vus": "gauge",
    "vus_max": "gauge",
}
AGGREGATIONS: Final = {
    "counter": ("count", "rate"),
    "gauge": ("value",),
    "rate": ("rate",),
    "trend": ("avg", "min", "max", "med", "p"),
}
_OPERATORS: Final = ("<=", "<", ">=", ">", "===", "==", "!=")
_METHODS: Final = ("value", "count", "rate", "avg", "min", "med", "max")
_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)


class ThresholdError(ValueError):
    """A threshold k6 would refuse to run (k6 exits 104, invalid config)."""


def _number(text: str) -> float:
    """Go's ``strconv.ParseFloat`` on the decimal forms people write."""
    if not _FLOAT.fullmatch(text):
        raise ThresholdError(f"{text!r} is not a number")
    return float(text)


def _g(value: float) -> str:
    """Go's ``%g`` for a percentile: 95 -> "95", 99.9 -> "99.9"."""
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True)
class Expression:
    method: str  # value, count, rate, avg, min, med, max or p
    percentile: float | None
    operator: str
    value: float

    @property
    def sink_key(self) -> str:
        return f"p({_g(self.percentile)})" if self.percentile is not None else self.method

    def holds(self, lhs: float) -> bool:
        op, rhs = self.operator, self.value
        if op == "<=":
            return lhs <= rhs
        if op == "<":
            return lhs < rhs
        if op == ">=":
            return lhs >= rhs
        if op == ">":
            return lhs > rhs
        if op in ("==", "==="):
            return lhs == rhs
        return lhs != rhs


def parse_expression(source: str) -> Expression:
    """``"p(95)<100"`` -> Expression("p", 95.0, "<", 100.0), as k6's parser reads it."""
    for op in _OPERATORS:
        left, found, right = source.partition(op)
        if found and right:
            break
    else:
        raise ThresholdError(f"malformed threshold expression {source!r}")
    method, value_text = left.strip(), right.strip()
    percentile = None
    if method not in _METHODS:
        if not (method.startswith("p(") and method.endswith(")")):
            raise ThresholdError(f"{source!r}: unknown aggregation method {method!r}")
        percentile = _number(method[2:-1])
        if math.isnan(percentile) or not 0 <= percentile <= 100:
            raise ThresholdError(f"{source!r}: a percentile is a number from 0 to 100")
        method = "p"
    return Expression(method, percentile, op, _number(value_text))


def parse_metric_name(key: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``"http_req_duration{name:search}"`` -> ("http_req_duration", (("name", "search"),)):
    k6's ParseMetricName checks, then AddSubmetric's trimming of spaces and quotes."""
    opening, closing = key.find("{"), key.rfind("}")
    if opening == -1 and closing == -1:
        return key, ()
    if opening == -1 or closing == -1 or closing < opening or closing != len(key) - 1:
        raise ThresholdError(f"metric {key!r} has unmatched or misplaced curly braces")
    body = key[opening + 1 : closing]
    for part in body.split(","):
        if not part.partition(":")[2]:
            raise ThresholdError(f"metric {key!r}: tag expression {part!r} is malformed")
    tags = []
    for part in body.split(","):
        name, _, value = part.partition(":")
        tags.append((name.strip().strip("\"'"), value.strip().strip("\"'")))
    return key[:opening], tuple(tags)


@dataclass(frozen=True)
class Threshold:
    source: str
    expression: Expression
    abort_on_fail: bool = False
    delay_abort_eval_ms: float | None = None

    def aborts(self, elapsed_ms: float) -> bool:
        """Whether failing now stops the run (threshold.go runAll)."""
        return self.abort_on_fail and (self.delay_abort_eval_ms is None or self.delay_abort_eval_ms < elapsed_ms)


@dataclass(frozen=True)
class MetricThresholds:
    key: str  # as written: "http_req_duration{name:search}"
    metric: str
    tags: tuple[tuple[str, str], ...]
    thresholds: tuple[Threshold, ...]

    @property
    def metric_type(self) -> str:
        return METRIC_TYPES[self.metric]


def _threshold(raw: object, key: str) -> Threshold:
    if isinstance(raw, str):
        return Threshold(raw, parse_expression(raw))
    if not isinstance(raw, dict) or not isinstance(raw.get("threshold"), str):
        raise ThresholdError(f"{key}: a threshold is a string or {{threshold, abortOnFail, delayAbortEval}}")
    unknown = set(raw) - {"threshold", "abortOnFail", "delayAbortEval"}
    if unknown:
        raise ThresholdError(f"{key}: unknown threshold option(s) {', '.join(sorted(unknown))}")
    delay = raw.get("delayAbortEval")
    try:
        delay_ms = None if delay is None else parse_duration(delay)
    except DurationError as exc:
        raise ThresholdError(f"{key}: delayAbortEval: {exc}") from None
    return Threshold(raw["threshold"], parse_expression(raw["threshold"]), bool(raw.get("abortOnFail")), delay_ms)


def parse_thresholds(raw: Mapping[str, Any]) -> tuple[MetricThresholds, ...]:
    """The ``thresholds`` option, validated as k6 validates it before a run."""
    if not isinstance(raw, dict):
        raise ThresholdError("thresholds must be an object")
    parsed = []
    for key, sources in raw.items():
        metric, tags = parse_metric_name(key)
        if metric not in METRIC_TYPES:
            raise ThresholdError(f"threshold on {key!r}: no metric {metric!r} (known: {', '.join(METRIC_TYPES)})")
        if not isinstance(sources, list):
            raise ThresholdError(f"{key}: thresholds are a list")
        thresholds = tuple(_threshold(source, key) for source in sources)
        allowed = AGGREGATIONS[METRIC_TYPES[metric]]
        for threshold in thresholds:
            if threshold.expression.method not in allowed:
                raise ThresholdError(
                    f"{threshold.source!r} on {key}: {threshold.expression.method} does not apply to a "
                    f"{METRIC_TYPES[metric]} (use {', '.join(allowed)})"
                )
        parsed.append(MetricThresholds(key, metric, tags, thresholds))
    return tuple(parsed)


@dataclass(frozen=True)
class Outcome:
    metric: MetricThresholds
    threshold: Threshold
    ok: bool
    observed: float | None  # the aggregation's value; None when it had none (then ok)


def evaluate(metric: MetricThresholds, values: Mapping[str, float], elapsed_ms: float) -> tuple[list[Outcome], bool]:
    """Every threshold of ``metric`` on its sink ``values`` (see ``metrics.threshold_values``),
    and whether a failure among them aborts the run at ``elapsed_ms``."""
    outcomes, abort = [], False
    for threshold in metric.thresholds:
        observed = values.get(threshold.expression.sink_key)
        ok = True if observed is None else threshold.expression.holds(observed)
        outcomes.append(Outcome(metric, threshold, ok, observed))
        if not ok and threshold.aborts(elapsed_ms):
            abort = True
    return outcomes, abort
