"""Turning a product row (joined with its seller) into the search document.

The row is what ``PRODUCT_ROWS_SQL`` selects. Pure code: no I/O, no engine, no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

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


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def product_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """The index document for a product row; ``_id`` is ``str(row["id"])``."""
    stock = int(row["stock"])
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "description": row["description"] or "",
        "category": row["category"],
        "fandom": row["fandom"],
        "price": float(row["price"]),
        "currency": row["currency"].strip(),
        "stock": stock,
        "in_stock": stock > 0,
        "rating": _number(row["rating"]),
        "seller": {"id": str(row["seller_id"]), "name": row["seller_name"]},
        "image_url": row["image_url"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }
