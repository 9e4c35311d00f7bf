"""The one percentile the benchmarks report: the sample nearest to the rank, never an interpolation.

Kept apart from k6's interpolated percentiles (``loadtest/metrics.py``), which the load runner must
match exactly; a bench reports a value that was measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], pct: float) -> float:
    """The ``pct``-th percentile (0–100) of ``values``: the sorted sample at rank ``round(pct / 100 × (n − 1))``.

    NaN for no values (a figure nobody measured: ``Results`` writes it as null, a table shows "—").
    NaN samples are left out. ``pct`` outside 0–100 is clamped to the smallest or largest sample.
    """
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]
