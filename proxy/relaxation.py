"""Zero-result recovery: what a text search shows when its strict query matches nothing.

The normal case is one engine round trip (the strict query of ``proxy.query``). Only when it
matched nothing does this ask again, at most twice:

1. the **relaxed** query — all but one of the words (or synonym terms) must match — together
   with a term suggester for the words the index does not know (same round trip);
2. if the suggester corrected a word, the strict query for the **corrected** text.

Corrected results win when there are any (the user most likely mistyped: ``okemon plush`` ->
``pokemon plush``, shown with ``did_you_mean``); otherwise the relaxed results are shown
(``gryffindor scarf``: Gryffindor things and scarves, best matches first). Either way the
answer says ``relaxed: true`` and carries the facets of what it shows.

Recovery is best effort: if a retry fails, the strict (empty) answer stands — a shopper
should see "no results", not a 503, because a second opinion was unavailable.

Never: building bodies (``proxy.query``), shaping (``proxy.answers``), or any I/O but the
``search`` callable it is given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from proxy.answers import correction, total_hits
from proxy.errors import BackendUnavailable
from proxy.params import SearchRequest
from proxy.query import build_search
from proxy.synonyms import Synonyms

# (engine body, operation label) -> the engine's decoded answer; raises BackendUnavailable.
SearchFn = Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]]
Outcome = Literal["strict", "relaxed", "corrected", "none"]


@dataclass(frozen=True, slots=True)
class Answer:
    """The engine response to shape, and how it was obtained."""

    engine_body: dict[str, Any]
    outcome: Outcome
    did_you_mean: str | None = None

    @property
    def relaxed(self) -> bool:
        return self.outcome in ("relaxed", "corrected")


async def search_with_recovery(req: SearchRequest, synonyms: Synonyms, search: SearchFn) -> Answer:
    """The strict search, and if a text search matched nothing, its recovery (see module doc)."""
    strict = await search(build_search(req, synonyms), "search")
    if not req.q or total_hits(strict) > 0:
        return Answer(strict, "strict")
    try:
        relaxed = await search(build_search(req, synonyms, relaxed=True), "search_relaxed")
        fix = correction(req.q, relaxed)
        if fix is not None:
            corrected = await search(build_search(req, synonyms, text=fix), "search_corrected")
            if total_hits(corrected) > 0:
                return Answer(corrected, "corrected", did_you_mean=fix)
    except BackendUnavailable:
        return Answer(strict, "none")
    if total_hits(relaxed) > 0:
        return Answer(relaxed, "relaxed")
    return Answer(strict, "none")
