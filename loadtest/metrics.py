"""A run's samples, kept as k6 keeps them: counter, gauge, rate and trend sinks (metrics/sink.go).

Samples are stored per metric and per set of tags, so a submetric such as
``http_req_duration{name:search}`` is every series whose tags include ``name=search``.
Trend percentiles are k6's: sort, then interpolate linearly between the two nearest ranks
(``i = p * (n - 1)``). Pure; the Locust glue adds samples.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from loadtest.thresholds import METRIC_TYPES, MetricThresholds, Outcome, evaluate

Tags = tuple[tuple[str, str], ...]


@dataclass
class Trend:
    values: array[float] = field(default_factory=lambda: array("d"))
    total: float = 0.0
    low: float = 0.0
    high: float = 0.0
    _sorted: bool = True

    def add(self, value: float) -> None:
        if not self.values:
            self.low = self.high = value
        else:
            self.low, self.high = min(self.low, value), max(self.high, value)
        self.values.append(value)
        self.total += value
        self._sorted = False

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def avg(self) -> float:
        return self.total / len(self.values) if self.values else 0.0

    def percentile(self, fraction: float) -> float:
        """k6's ``TrendSink.P``: 0 with no values, the value with one, else linear between ranks."""
        n = len(self.values)
        if n == 0:
            return 0.0
        if n == 1:
            return self.values[0]
        if not self._sorted:
            # Timsort merges the sorted prefix with the new tail: cheap when evaluated during a run.
            self.values = array("d", sorted(self.values))
            self._sorted = True
        i = fraction * (n - 1.0)
        low, high = self.values[math.floor(i)], self.values[math.ceil(i)]
        return low + (high - low) * (i - math.floor(i))

    def merge(self, other: Trend) -> None:
        if other.values:
            if not self.values:
                self.low, self.high = other.low, other.high
            else:
                self.low, self.high = min(self.low, other.low), max(self.high, other.high)
            self.values.extend(other.values)
            self.total += other.total
            self._sorted = False

    @property
    def empty(self) -> bool:
        return not self.values


@dataclass
class Rate:
    passes: int = 0
    total: int = 0

    def add(self, value: float) -> None:
        self.total += 1
        if value:
            self.passes += 1

    def merge(self, other: Rate) -> None:
        self.passes += other.passes
        self.total += other.total

    @property
    def empty(self) -> bool:
        return self.total == 0


@dataclass
class Counter:
    value: float = 0.0
    samples: int = 0

    def add(self, value: float) -> None:
        self.value += value
        self.samples += 1

    def merge(self, other: Counter) -> None:
        self.value += other.value
        self.samples += other.samples

    @property
    def empty(self) -> bool:
        return self.samples == 0


@dataclass
class Gauge:
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0
    samples: int = 0

    def add(self, value: float) -> None:
        self.low = value if not self.samples else min(self.low, value)
        self.high = value if not self.samples else max(self.high, value)
        self.value = value
        self.samples += 1

    def merge(self, other: Gauge) -> None:
        if other.samples:
            self.low = other.low if not self.samples else min(self.low, other.low)
            self.high = other.high if not self.samples else max(self.high, other.high)
            self.value = other.value
            self.samples += other.samples

    @property
    def empty(self) -> bool:
        return self.samples == 0


Sink = Trend | Rate | Counter | Gauge
_SINKS: Final = {"trend": Trend, "rate": Rate, "counter": Counter, "gauge": Gauge}
CONTAINS: Final = {"http_req_duration": "time", "iteration_duration": "time"}


class Metrics:
    """Every sample of a run, by metric and tag set."""

    def __init__(self) -> None:
        self._series: dict[str, dict[Tags, Sink]] = {name: {} for name in METRIC_TYPES}

    def add(self, metric: str, value: float, tags: Tags = ()) -> None:
        """Add a sample; ``tags`` sorted by name (the caller builds them once per kind)."""
        series = self._series[metric]
        sink = series.get(tags)
        if sink is None:
            sink = series[tags] = _SINKS[METRIC_TYPES[metric]]()
        sink.add(value)  # type: ignore[arg-type]

    def sink(self, metric: str, tags: Iterable[tuple[str, str]] = ()) -> Sink:
        """The metric (or its submetric: the series whose tags include ``tags``) as one sink."""
        wanted = set(tags)
        merged = _SINKS[METRIC_TYPES[metric]]()
        for series_tags, sink in self._series[metric].items():
            if wanted <= set(series_tags):
                merged.merge(sink)  # type: ignore[arg-type]
        return merged

    def observed(self) -> list[str]:
        """Metrics with at least one sample, in METRIC_TYPES order."""
        return [name for name, series in self._series.items() if series]

    def tag_values(self, metric: str, tag: str) -> list[str]:
        """The values ``tag`` takes on ``metric``, in the order first seen."""
        seen: dict[str, None] = {}
        for series_tags in self._series[metric]:
            for name, value in series_tags:
                if name == tag:
                    seen.setdefault(value)
        return list(seen)


def threshold_values(sink: Sink, duration_ms: float, metric: MetricThresholds) -> dict[str, float]:
    """What k6's ``Thresholds.Run`` exposes to thresholds: missing keys pass."""
    if isinstance(sink, Counter):
        values = {"count": sink.value}
        if duration_ms > 0:
            values["rate"] = sink.value / (duration_ms / 1000)
        return values
    if isinstance(sink, Gauge):
        return {"value": sink.value}
    if isinstance(sink, Rate):
        return {"rate": sink.passes / sink.total} if sink.total else {}
    values = {"min": sink.low, "max": sink.high, "avg": sink.avg, "med": sink.percentile(0.5)}
    for threshold in metric.thresholds:
        expression = threshold.expression
        if expression.percentile is not None:
            values[expression.sink_key] = sink.percentile(expression.percentile / 100)
    return values


def trend_stat(sink: Trend, stat: str) -> float:
    """One column of ``summaryTrendStats``: avg, min, med, max, count or p(N)."""
    if stat == "avg":
        return sink.avg
    if stat == "min":
        return sink.low
    if stat == "max":
        return sink.high
    if stat == "med":
        return sink.percentile(0.5)
    if stat == "count":
        return float(sink.count)
    if stat.startswith("p(") and stat.endswith(")"):
        return sink.percentile(float(stat[2:-1]) / 100)
    raise ValueError(f"unknown trend stat {stat!r}")


def summary_values(sink: Sink, duration_ms: float, trend_stats: Iterable[str]) -> dict[str, float]:
    """A metric's ``values`` in k6's end-of-test summary data (js/summary.go metricValueGetter)."""
    if isinstance(sink, Counter):
        return {"count": sink.value, "rate": sink.value / (duration_ms / 1000) if duration_ms > 0 else 0.0}
    if isinstance(sink, Gauge):
        return {"value": sink.value, "min": sink.low, "max": sink.high}
    if isinstance(sink, Rate):
        return {
            "rate": sink.passes / sink.total if sink.total else 0.0,
            "passes": float(sink.passes),
            "fails": float(sink.total - sink.passes),
        }
    return {stat: trend_stat(sink, stat) for stat in trend_stats}


def tags_of(values: Mapping[str, str]) -> Tags:
    return tuple(sorted(values.items()))


@dataclass(frozen=True)
class Verdict:
    """Every threshold's outcome at one evaluation, and whether the run must stop."""

    outcomes: tuple[Outcome, ...]
    abort: bool

    @property
    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.ok]


def evaluate_thresholds(
    thresholds: Iterable[MetricThresholds], metrics: Metrics, elapsed_ms: float, *, during_run: bool = False
) -> Verdict:
    """k6's MetricsEngine.evaluateThresholds: every 2 s during the run (metrics without samples
    skipped, ``abortOnFail`` honoured), and once at the end over everything."""
    outcomes: list[Outcome] = []
    abort = False
    for metric in thresholds:
        sink = metrics.sink(metric.metric, metric.tags)
        if during_run and sink.empty:
            continue
        results, aborts = evaluate(metric, threshold_values(sink, elapsed_ms, metric), elapsed_ms)
        outcomes.extend(results)
        abort = abort or aborts
    return Verdict(tuple(outcomes), abort)
