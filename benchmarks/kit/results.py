"""What a benchmark measured: its figures (each with the baseline measured beside it) and plots, as JSON.

Every bench builds one :class:`Results` and writes it with its ``--json PATH`` option; the report
(``benchmarks/report.py``) reads those files. Never imports matplotlib or a bench.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MAX_SAMPLES = 2_000  # per plotted sample set in the JSON: more are thinned to evenly spaced quantiles


@dataclass
class Figure:
    """One measured figure: ``ratio`` is value / baseline, both measured in the same run."""

    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""  # what the baseline is ("bare aiohttp app", "engine direct")
    ratio: float | None = None
    goal: str = ""  # as people say it: "≥ 0.85 × the bare app", "p99 < 100 ms"
    met: bool | None = None  # None: no goal, or not measurable at this size
    notes: str = ""


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _thin(values: Sequence[float]) -> list[float]:
    """At most MAX_SAMPLES values: sorted quantiles when thinned (a CDF needs nothing else)."""
    clean = sorted(v for v in values if math.isfinite(v))
    if len(clean) <= MAX_SAMPLES:
        return [round(v, 4) for v in values if math.isfinite(v)]
    step = (len(clean) - 1) / (MAX_SAMPLES - 1)
    return [round(clean[round(i * step)], 4) for i in range(MAX_SAMPLES)]


class Results:
    """What one bench measured, written as JSON by its ``--json PATH`` option."""

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.figures: list[Figure] = []
        self.plots: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {}
        self.tables: list[dict[str, Any]] = []

    def table(self, title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A small table the report prints under the bench (a profile's parts, say), cells as text."""
        self.tables.append({"title": title, "header": list(header), "rows": [list(r) for r in rows]})

    def add(
        self,
        name: str,
        value: float | None,
        unit: str,
        *,
        baseline: float | None = None,
        baseline_label: str = "",
        goal: str = "",
        met: bool | None = None,
        notes: str = "",
        ratio: float | None = None,
    ) -> None:
        if ratio is None and value is not None and baseline:
            ratio = value / baseline
        self.figures.append(
            Figure(
                name,
                _finite(value),
                unit,
                _finite(baseline),
                baseline_label,
                _finite(ratio),
                goal,
                met,
                notes,
            )
        )

    def cdf(self, file: str, title: str, unit: str, samples: dict[str, Sequence[float]]) -> None:
        """A plot of the latency distributions of ``samples`` (label -> values), one line each."""
        self.plots.append(
            {
                "kind": "cdf",
                "file": file,
                "title": title,
                "unit": unit,
                "samples": {k: _thin(v) for k, v in samples.items() if v},
            }
        )

    def series(
        self,
        file: str,
        title: str,
        x: Sequence[float],
        xlabel: str,
        panels: list[tuple[str, dict[str, Sequence[float]]]],
    ) -> None:
        """A plot over time: panels stacked, each a y label and its lines (label -> values at ``x``)."""
        self.plots.append(
            {
                "kind": "series",
                "file": file,
                "title": title,
                "x": [round(v, 3) for v in x],
                "xlabel": xlabel,
                "panels": [
                    {"ylabel": ylabel, "lines": {k: [_finite(v) for v in vs] for k, vs in lines.items()}}
                    for ylabel, lines in panels
                ],
            }
        )

    def write(self, path: Path) -> None:
        document: dict[str, Any] = {
            "bench": self.bench,
            "figures": [asdict(f) for f in self.figures],
            "plots": self.plots,
            "meta": self.meta,
            "tables": self.tables,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1, ensure_ascii=False))


NOT_CLAIMED = "would be met, not claimed"


# CPU that programs outside the run may use, in cores, before the run counts as busy.
OUTSIDE_CORES_MAX = 0.5


def busy(load_averages: Sequence[float], cores: int, outside_cores: Sequence[float] = ()) -> bool:
    """Whether a run was made on a busy machine: a 1-minute load average above the cores it could
    use when it began, or, when any bench began, programs outside the run using more than
    :data:`OUTSIDE_CORES_MAX` cores (``benchmarks.kit.processes.cores_used_outside``). Goals are
    not claimed from such a run (issue 24): the figures it gives are other programs' as much as
    ours. (The load average after a bench is not asked: it counts the run's own engines and load
    generators — three engine nodes and wrk lifted it to 4.2 on an otherwise idle machine.)"""
    return max(load_averages, default=0.0) > cores or max(outside_cores, default=0.0) > OUTSIDE_CORES_MAX


def verdict_of(met: bool | None, *, busy: bool, bold: bool = False) -> str:
    """What a report says of a goal: met, missed, not judged (None), or — from a busy machine —
    never "met": a figure that reached its goal there is only said to be one that would."""
    if met is None:
        return "—"
    if not met:
        return "**NO**"
    if busy:
        return NOT_CLAIMED
    return "**yes**" if bold else "yes"
