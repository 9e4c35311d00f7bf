"""Domain synonyms, applied by the proxy at search time: parsing the file and expanding a query.

Why the proxy expands synonyms instead of a ``synonym_graph`` filter in the engine's search
analyzer: the file must be editable without a reindex and without downtime, on both engines
we run. Elasticsearch 9 can reload an ``updateable`` synonym filter
(``POST /<index>/_reload_search_analyzers``, file in the config dir of every node, or the
synonyms API); OpenSearch 2.19 core has neither — its ``_plugins/_refresh_search_analyzers``
belongs to the Index State Management plugin, which the dev node (and many managed
deployments) do not have. Changing analysis settings otherwise means closing the index, which
is downtime. Expanding in the proxy works on every engine, needs no file on the engine's nodes,
and keeps the mapping's analyzers static (``catalog.mapping``: only plurals and compounds are
normalised there, identically at index and search time).

The file (``catalog/synonyms.txt`` by default; ``SYNONYMS_PATH`` names another) uses the Solr
format that ``synonym_graph`` reads, so it can move into the engine one day unchanged:

- ``tee, t-shirt, tshirt`` — equivalent terms: typing any one finds any of them;
- ``lightsabre => lightsaber`` — explicit: the left side is replaced by the right side;
- ``#`` starts a comment; blank lines are ignored.

Terms are folded (case, accents) and split on anything but letters and digits, as the
engine's analyzer does: ``T-Shirt`` is the two words ``t shirt``. A term of several words
matches those words in sequence and is searched as a phrase.

Reloading: the proxy reads the file at start and again on ``SIGHUP`` (``kill -HUP <pid>``;
the supervisor of ``hos-search proxy --workers N`` passes it on to every worker). A file that
does not parse is logged and ignored: the synonyms in use stay as they were.

Pure code apart from :func:`load_synonyms` (which only reads the file). Never talks to the
engine, never raises while expanding.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from proxy.errors import ProxyError

Words = tuple[str, ...]

DEFAULT_SYNONYMS_PATH: Final = Path(__file__).resolve().parent.parent / "catalog" / "synonyms.txt"

# Letters and digits, after folding: what the engine's word_delimiter_graph keeps.
_WORD = re.compile(r"[^\W_]+")
# "Collector's" is "collector", as the engine's possessive stemming has it.
_POSSESSIVE = re.compile(r"['’]s\b")
# Longest synonym term, in words, that the expander looks for.
MAX_TERM_WORDS: Final = 4


class SynonymError(ProxyError, ValueError):
    """The synonym file does not parse; the message names the line."""


def fold(text: str) -> str:
    """Case- and accent-insensitive form, like the index's folded analyzers: "Pokémon" -> "pokemon".

    ``casefold``, not ``lower``: "ß" folds to "ss", as the engine's ``asciifolding`` has it.
    The one fold of the proxy: synonym terms and typed words here, suggestion names in
    ``proxy.answers``.
    """
    if text.isascii():
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def words(text: str) -> Words:
    """The words of ``text`` as the engine splits them: folded, split on punctuation."""
    return tuple(_WORD.findall(_POSSESSIVE.sub("", fold(text))))


def _singulars(word: str) -> Iterator[str]:
    """``word`` and the singulars it may be the plural of (the file lists singulars)."""
    yield word
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us")):
        yield word[:-1]
        if word.endswith("es"):
            yield word[:-2]
        if word.endswith("ies"):
            yield word[:-3] + "y"
        if word.endswith("ves"):
            yield word[:-3] + "f"


@dataclass(frozen=True, slots=True)
class Unit:
    """One thing a query asks for: a typed word, or a span of words with synonym alternatives.

    ``alternatives`` is empty for a plain word; otherwise each alternative is a sequence of
    words that satisfies the unit (the typed words among them unless a ``=>`` rule replaced them).
    """

    typed: Words
    alternatives: tuple[Words, ...] = ()


@dataclass(frozen=True, slots=True)
class Synonyms:
    """Parsed synonym rules: for each term (a word sequence), what it may be searched as."""

    rules: dict[Words, tuple[Words, ...]] = field(default_factory=dict)
    longest: int = 0

    def __len__(self) -> int:
        return len(self.rules)

    def fingerprint(self) -> str:
        """A short digest of the rules: equal rules, equal fingerprints (whatever the file's layout)."""
        canonical = repr(sorted(self.rules.items()))
        return hashlib.blake2b(canonical.encode(), digest_size=6).hexdigest()

    def _match(self, tokens: Words, start: int) -> tuple[int, tuple[Words, ...]] | None:
        """The longest rule matching at ``start``: (words consumed, alternatives)."""
        for length in range(min(self.longest, len(tokens) - start), 0, -1):
            span = tokens[start : start + length]
            head = span[:-1]
            for last in _singulars(span[-1]):
                alternatives = self.rules.get((*head, last))
                if alternatives is not None:
                    return length, alternatives
        return None

    def expand(self, tokens: Words) -> list[Unit]:
        """The units of a query's words, longest synonym terms first, left to right."""
        units: list[Unit] = []
        i = 0
        while i < len(tokens):
            match = self._match(tokens, i) if self.rules else None
            if match is None:
                units.append(Unit((tokens[i],)))
                i += 1
                continue
            length, alternatives = match
            typed = tokens[i : i + length]
            units.append(Unit(typed, alternatives))
            i += length
        return units


def _terms(text: str, line_no: int) -> list[Words]:
    terms = []
    for raw in text.split(","):
        term = words(raw)
        if not term:
            if raw.strip():
                raise SynonymError(f"line {line_no}: {raw.strip()!r} has no letters or digits")
            raise SynonymError(f"line {line_no}: empty term")
        if len(term) > MAX_TERM_WORDS:
            raise SynonymError(f"line {line_no}: {raw.strip()!r} has more than {MAX_TERM_WORDS} words")
        terms.append(term)
    return terms


def _unique(items: Iterable[Words]) -> tuple[Words, ...]:
    return tuple(dict.fromkeys(items))


def parse_synonyms(text: str) -> Synonyms:
    """Parse the Solr synonym format (see the module docstring); raises SynonymError."""
    rules: dict[Words, list[Words]] = {}
    for line_no, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=>" in line:
            left, _, right = line.partition("=>")
            if "=>" in right:
                raise SynonymError(f"line {line_no}: more than one '=>'")
            targets = _terms(right, line_no)
            for term in _terms(left, line_no):
                rules.setdefault(term, []).extend(targets)
        else:
            group = _terms(line, line_no)
            if len(group) < 2:
                raise SynonymError(f"line {line_no}: a group needs at least two terms")
            for term in group:
                # The term itself first: what was typed is the best match for what was typed.
                rules.setdefault(term, []).extend([term, *(other for other in group if other != term)])
    frozen = {term: _unique(alternatives) for term, alternatives in rules.items()}
    return Synonyms(frozen, max((len(term) for term in frozen), default=0))


class SynonymsHolder:
    """The synonyms in use; replaced whole on reload (``proxy.app``), read once per search.

    ``fingerprint`` is part of every search's cache key: answers found with other synonyms are
    not served after a reload (``kill -HUP``), and workers still on the old file (mid-reload,
    or on another host) do not share entries with those on the new one.
    """

    __slots__ = ("current", "fingerprint")

    def __init__(self, current: Synonyms) -> None:
        self.current = current
        self.fingerprint = current.fingerprint()

    def replace(self, synonyms: Synonyms) -> None:
        self.current, self.fingerprint = synonyms, synonyms.fingerprint()


def load_synonyms(path: Path) -> Synonyms:
    """Read and parse the synonym file; raises OSError or SynonymError."""
    return parse_synonyms(path.read_text(encoding="utf-8"))


EMPTY: Final = Synonyms()
