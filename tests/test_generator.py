"""The sample-catalog generator: deterministic, realistic, and fit for the schema. No servers."""

from __future__ import annotations

import inspect
from collections import Counter
from datetime import datetime
from decimal import Decimal
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.generator import (
    CATEGORIES,
    EPOCH,
    FANDOM_VOCAB,
    FANDOMS,
    PRODUCT_COLUMNS,
    SELLER_COLUMNS,
    ProductRow,
    generate_catalog,
    iter_products,
    iter_sellers,
    seller_count,
)

COL = {name: index for index, name in enumerate(PRODUCT_COLUMNS)}
# Literal positions as well as COL: only a literal index lets mypy type row[PRICE] as ProductRow's
# Decimal instead of the union of all its columns. test_rows_follow_the_column_constants checks
# they agree with PRODUCT_COLUMNS.
ID: Final = 0
SELLER_ID: Final = 1
NAME: Final = 2
DESCRIPTION: Final = 3
CATEGORY: Final = 4
FANDOM: Final = 5
PRICE: Final = 6
CURRENCY: Final = 7
STOCK: Final = 8
STATUS: Final = 9
IMAGE_URL: Final = 10
RATING: Final = 11
CREATED_AT: Final = 12
UPDATED_AT: Final = 13


@pytest.fixture(scope="module")
def rows_20k() -> list[ProductRow]:
    return list(iter_products(20_000, seed=42))


def test_same_seed_gives_identical_catalog() -> None:
    first = generate_catalog(3_000, seed=42)
    second = generate_catalog(3_000, seed=42)
    assert first.sellers == second.sellers
    assert list(first.iter_products()) == list(second.iter_products())


def test_catalog_products_can_be_iterated_again_with_the_same_rows() -> None:
    catalog = generate_catalog(1_000, seed=3)
    assert list(catalog.iter_products()) == list(catalog.iter_products())
    assert list(catalog.iter_products()) == list(iter_products(1_000, seed=3))


def test_different_seed_gives_different_catalog() -> None:
    assert list(iter_products(500, seed=1)) != list(iter_products(500, seed=2))
    assert list(iter_sellers(500, seed=1)) != list(iter_sellers(500, seed=2))


def test_products_stream_instead_of_being_built_as_a_list() -> None:
    assert inspect.isgenerator(iter_products(150_000, seed=42))
    assert inspect.isgenerator(generate_catalog(150_000).iter_products())


def test_rows_follow_the_column_constants() -> None:
    seller = next(iter_sellers(1, seed=42))
    assert len(seller) == len(SELLER_COLUMNS)
    product = next(iter_products(10, seed=42))
    assert len(product) == len(PRODUCT_COLUMNS)
    assert isinstance(product[COL["price"]], Decimal)
    created_at = product[COL["created_at"]]
    assert isinstance(created_at, datetime)
    assert created_at.tzinfo is not None
    assert COL == {
        "id": ID,
        "seller_id": SELLER_ID,
        "name": NAME,
        "description": DESCRIPTION,
        "category": CATEGORY,
        "fandom": FANDOM,
        "price": PRICE,
        "currency": CURRENCY,
        "stock": STOCK,
        "status": STATUS,
        "image_url": IMAGE_URL,
        "rating": RATING,
        "created_at": CREATED_AT,
        "updated_at": UPDATED_AT,
    }


@settings(max_examples=25, deadline=None)
@given(products=st.integers(min_value=0, max_value=300), seed=st.integers())
def test_product_ids_are_one_to_n(products: int, seed: int) -> None:
    ids = [row[ID] for row in iter_products(products, seed=seed)]
    assert ids == list(range(1, products + 1))


def test_5k_products_span_at_least_30_fandoms_and_10_categories() -> None:
    rows = list(iter_products(5_000, seed=42))
    assert len({row[FANDOM] for row in rows}) >= 30
    assert len({row[CATEGORY] for row in rows}) >= 10
    assert {row[FANDOM] for row in rows} <= set(FANDOMS)
    assert {row[CATEGORY] for row in rows} <= set(CATEGORIES)


def test_fandom_names_keep_their_accents() -> None:
    assert "Pokémon" in FANDOMS


def test_a_150k_catalog_has_a_few_hundred_sellers_without_generating_products() -> None:
    assert 300 <= seller_count(150_000) <= 400
    sellers = list(iter_sellers(150_000, seed=42))
    assert len(sellers) == seller_count(150_000)
    assert [seller[0] for seller in sellers] == list(range(1, len(sellers) + 1))
    assert len({seller[1] for seller in sellers}) == len(sellers), "seller names repeat"
    assert seller_count(100) == 20
    assert seller_count(10_000_000) == 400


def test_status_mix_is_mostly_active(rows_20k: list[ProductRow]) -> None:
    shares = Counter(row[STATUS] for row in rows_20k)
    total = len(rows_20k)
    assert set(shares) == {"active", "draft", "archived"}
    assert 0.82 <= shares["active"] / total <= 0.88
    assert 0.08 <= shares["draft"] / total <= 0.12
    assert 0.03 <= shares["archived"] / total <= 0.07


def test_prices_are_positive_with_two_decimals_and_fit_numeric_10_2(
    rows_20k: list[ProductRow],
) -> None:
    for row in rows_20k:
        price = row[PRICE]
        assert Decimal("0") < price < Decimal("100000000"), row
        assert price.as_tuple().exponent == -2, row


def test_prices_are_skewed_with_a_few_very_expensive_replicas(rows_20k: list[ProductRow]) -> None:
    prices = sorted(row[PRICE] for row in rows_20k)
    median = prices[len(prices) // 2]
    assert median < Decimal("40")
    # £2,000+ is beyond any category's log-normal tail: only the deliberate
    # full-size replicas reach it, and only a handful of them.
    expensive = [row for row in rows_20k if row[PRICE] >= Decimal("2000")]
    assert 5 <= len(expensive) < len(rows_20k) * 0.005
    assert {row[CATEGORY] for row in expensive} == {"replicas"}


def test_names_are_non_empty_and_fit_the_column(rows_20k: list[ProductRow]) -> None:
    for row in rows_20k:
        name = row[NAME]
        assert name.strip() == name and 1 <= len(name) <= 300, row
        assert row[DESCRIPTION].strip(), row


def test_names_are_built_from_their_fandoms_vocabulary(rows_20k: list[ProductRow]) -> None:
    # Fuzzy and prefix search only mean something if "Pikachu" products are Pokémon products.
    vocab = {fandom.name: (fandom.name, *fandom.characters, *fandom.places, *fandom.items) for fandom in FANDOM_VOCAB}
    for row in rows_20k:
        words = vocab[row[FANDOM]]
        assert any(word in row[NAME] for word in words), row
    assert len({row[NAME] for row in rows_20k}) > len(rows_20k) // 4


def test_every_product_belongs_to_a_generated_seller(rows_20k: list[ProductRow]) -> None:
    seller_ids = {seller[0] for seller in iter_sellers(20_000, seed=42)}
    used = {row[SELLER_ID] for row in rows_20k}
    assert used <= seller_ids
    assert len(used) > len(seller_ids) // 2, "most sellers should have products"


def test_a_few_fandoms_dominate(rows_20k: list[ProductRow]) -> None:
    counts = Counter(row[FANDOM] for row in rows_20k).most_common()
    uniform = len(rows_20k) / len(FANDOMS)
    assert counts[0][1] > 4 * uniform
    top_five = sum(count for _, count in counts[:5])
    assert top_five > 0.4 * len(rows_20k)


def test_stock_ratings_and_currencies_look_like_a_marketplace(rows_20k: list[ProductRow]) -> None:
    total = len(rows_20k)
    stocks = [row[STOCK] for row in rows_20k]
    assert min(stocks) == 0 and all(stock >= 0 for stock in stocks)
    assert 0.05 < stocks.count(0) / total < 0.2

    ratings = [row[RATING] for row in rows_20k]
    assert 0.05 < ratings.count(None) / total < 0.25
    for rating in ratings:
        if rating is not None:
            assert Decimal("0") <= rating <= Decimal("5")
            assert rating.as_tuple().exponent == -1

    currencies = Counter(row[CURRENCY] for row in rows_20k)
    assert set(currencies) == {"GBP", "EUR", "USD"}
    assert currencies["GBP"] > total / 2


def test_timestamps_come_from_the_fixed_epoch_not_the_clock(rows_20k: list[ProductRow]) -> None:
    for row in rows_20k:
        created, updated = row[CREATED_AT], row[UPDATED_AT]
        assert EPOCH <= created < EPOCH.replace(year=EPOCH.year + 3), row
        assert updated >= created, row
    for seller in iter_sellers(20_000, seed=42):
        assert seller[3] < EPOCH and seller[4] >= seller[3]
