"""Turning a product row (joined with its seller) into the search document.

The row is what ``PRODUCT_ROWS_SQL`` selects. Pure code: no I/O, no engine, no database.

Every row the schema accepts either becomes a document or raises :class:`UnindexableRow` with a
short reason — never another exception (issue 23: ``created_at = '-infinity'`` made this raise
``OverflowError`` outside every handler, and the indexer, a reindex and the fallback all fell
over on one row). Unindexable: a non-finite timestamp (``±infinity``) or a non-finite price
(``numeric`` accepts ``NaN``). Bounded rather than refused: a description longer than
:data:`MAX_DESCRIPTION_CHARS` is cut there, an ``image_url`` longer than
:data:`MAX_IMAGE_URL_CHARS` is dropped; the migration ``0005_row_constraints`` asks the same of
new rows, so these are rows written before it or around it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from catalog.errors import CatalogError

# Enough for any real product page; the engine and the fallback's answers stay small.
MAX_DESCRIPTION_CHARS: Final = 10_000
MAX_IMAGE_URL_CHARS: Final = 2_048


class UnindexableRow(CatalogError):
    """A product row that cannot become a document; ``reason`` is short and names the column."""

    def __init__(self, product_id: object, reason: str) -> None:
        super().__init__(f"product {product_id}: {reason}")
        self.product_id = product_id
        self.reason = reason


# The one query both the indexer and a full reindex use to read products with their seller.
# Callers append their own WHERE clause (e.g. ``WHERE p.id = ANY($1)``).
PRODUCT_ROWS_SQL = """
SELECT p.id, p.seller_id, s.name AS seller_name, p.name, p.description, p.category,
       p.fandom, p.price, p.currency, p.stock, p.status, p.image_url, p.rating,
       p.created_at, p.updated_at
  FROM products p
  JOIN sellers s ON s.id = p.seller_id
"""


def is_searchable(row: Mapping[str, Any]) -> bool:
    """Only active products exist in the index; drafts and archived ones are deleted from it."""
    return bool(row["status"] == "active")


def _iso(row: Mapping[str, Any], column: str) -> str:
    value = row[column]
    # asyncpg gives ±infinity as naive datetime.min/max; a real timestamptz is always aware.
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise UnindexableRow(row["id"], f"{column} is not a finite timestamp")
    try:
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):
        raise UnindexableRow(row["id"], f"{column} is out of range") from None


def _number(value: Decimal | float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _price(row: Mapping[str, Any]) -> float:
    price = float(row["price"])
    if not math.isfinite(price) or price < 0:
        raise UnindexableRow(row["id"], "price is not a finite, non-negative number")
    return price


def product_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """The index document for a product row; ``_id`` is ``str(row["id"])``.

    Raises :class:`UnindexableRow` (only that) for a row no document can be made of.
    """
    stock = int(row["stock"])
    description = row["description"] or ""
    image_url = row["image_url"]
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "description": description[:MAX_DESCRIPTION_CHARS],
        "category": row["category"],
        "fandom": row["fandom"],
        "price": _price(row),
        "currency": row["currency"].strip(),
        "stock": stock,
        "in_stock": stock > 0,
        "rating": _number(row["rating"]),
        "seller": {"id": str(row["seller_id"]), "name": row["seller_name"]},
        "image_url": image_url if image_url is None or len(image_url) <= MAX_IMAGE_URL_CHARS else None,
        "created_at": _iso(row, "created_at"),
        "updated_at": _iso(row, "updated_at"),
    }
