"""The base of every expected failure in ``indexer``: its entry point catches this one family."""

from __future__ import annotations


class IndexerError(Exception):
    """An expected failure of the indexer; the message is one line for the user."""
