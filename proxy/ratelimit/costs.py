"""What a request costs, in tokens, by route and parsed request. Pure.

A suggestion (sent on every keystroke) is cheaper than a search, a deep page (beyond
:data:`DEEP_PAGE`, the pages scrapers walk) dearer. The prices are configurable:
``RATE_LIMIT_COSTS`` lists ``name=tokens`` pairs separated by commas, for any of the names in
:data:`DEFAULT_COSTS`; names left out keep their default. For example
``RATE_LIMIT_COSTS=suggestions=0.25,deep_search=5``.

Which routes are limited, and how a request is parsed before it is priced, is the route
table's (``proxy.routes``). A route's engine calls beyond the first (a text search that found
nothing and was relaxed: up to 3 calls) are charged after the answer at the route's own price
each, from the same bucket (:data:`proxy.routes.Route`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from catalog.config import ConfigError

# A search page after this one costs ``deep_search`` instead of ``search``.
DEEP_PAGE: Final = 5
DEFAULT_COSTS: Final[Mapping[str, float]] = MappingProxyType(
    {"search": 1.0, "deep_search": 2.0, "suggestions": 0.5, "product": 1.0, "seller": 1.0}
)


def cost_of(costs: Mapping[str, float], route: str, page: int = 1) -> float:
    """The tokens a request to ``route`` costs, from its **parsed** request: ``page`` is a
    search's validated page, so ``page=0000006`` is page 6 (issue 23: it paid for page 1)."""
    if route == "search" and page > DEEP_PAGE:
        return costs["deep_search"]
    return costs[route]


def costs_from_env(env: Mapping[str, str], capacity: int) -> Mapping[str, float]:
    """``RATE_LIMIT_COSTS`` over the defaults; ConfigError names the setting and the bad entry.

    A cost above ``capacity`` (``RATE_LIMIT_MAX``) could never be paid: it is refused too.
    """
    costs = dict(DEFAULT_COSTS)
    raw = env.get("RATE_LIMIT_COSTS", "")
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        name, sep, value = (part.strip() for part in entry.partition("="))
        if not sep or name not in DEFAULT_COSTS:
            raise ConfigError(
                f"RATE_LIMIT_COSTS: entries are name=tokens with a name among {', '.join(DEFAULT_COSTS)}, got {entry!r}"
            )
        try:
            cost = float(value)
        except ValueError:
            cost = math.nan
        if not (math.isfinite(cost) and 0 <= cost <= capacity):
            raise ConfigError(
                f"RATE_LIMIT_COSTS: {name} must cost a number of tokens from 0 to RATE_LIMIT_MAX ({capacity}), "
                f"got {value!r}"
            )
        costs[name] = cost
    return MappingProxyType(costs)
