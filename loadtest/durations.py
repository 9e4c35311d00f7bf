"""k6 durations: "30s", "1m30s", "500ms", "1d2h", or a bare number of milliseconds.

k6 reads a duration string as a number of milliseconds when it is one, as days plus a Go
duration when it has a ``d``, else with Go's ``time.ParseDuration`` (lib/types/types.go
ParseExtendedDuration). Results here are milliseconds as floats; loadtest/k6/profile.js computes the
same. Pure.
"""

from __future__ import annotations

import math
import re
from typing import Final


class DurationError(ValueError):
    """Not a duration k6 accepts (or a negative one)."""


_UNIT_MS: Final = {
    "ns": 1e-6,
    "us": 1e-3,
    "µs": 1e-3,
    "μs": 1e-3,
    "ms": 1.0,
    "s": 1000.0,
    "m": 60_000.0,
    "h": 3_600_000.0,
}
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DAYS = re.compile(r"(\d+)d(.*)")


def _go_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` (unsigned): "1h2m3.5s", "500ms", "0"."""
    if text == "0":
        return 0.0
    total, position = 0.0, 0
    while position < len(text):
        part = _GO_PART.match(text, position)
        if part is None:
            raise DurationError(f"invalid duration {text!r}")
        total += float(part.group(1)) * _UNIT_MS[part.group(2)]
        position = part.end()
    if position == 0:
        raise DurationError(f"invalid duration {text!r}")
    return total


def parse_duration(value: object) -> float:
    """Milliseconds in a k6 duration: "30s", "1m30s", "500ms", "1d2h"; a bare number is ms."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DurationError(f"invalid duration {value!r}")
    if isinstance(value, str):
        if _NUMBER.fullmatch(value):
            ms = float(value)
        elif days := _DAYS.fullmatch(value):
            ms = int(days.group(1)) * 86_400_000.0 + (_go_duration(days.group(2)) if days.group(2) else 0.0)
        else:
            ms = _go_duration(value)
    else:
        ms = float(value)
    if not math.isfinite(ms) or ms < 0:
        raise DurationError(f"invalid duration {value!r}: must be a finite, non-negative time")
    return ms
