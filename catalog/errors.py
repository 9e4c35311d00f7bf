"""The base of every expected failure in ``catalog``: entry points catch this one family.

A :class:`CatalogError`'s message is one line meant for the person running the command (it
names the setting, the server or the file); entry points print it and exit non-zero, never a
traceback. Subclasses say what kind of failure it was.
"""

from __future__ import annotations


class CatalogError(Exception):
    """An expected failure of a catalog operation; the message is one line for the user."""
