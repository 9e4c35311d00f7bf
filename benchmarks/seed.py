"""Benchmark: how fast the sample catalog loads, as ratios against a plain COPY baseline.

    python -m benchmarks.seed --products 150000 [--small 20000] [--no-breakdown]

Starts an embedded Postgres (``devstack.servers.start_postgres``: 127.0.0.1 only, stopped on
exit) unless ``--database-url`` names a server, applies the migrations into fresh databases,
and times, in one run on one machine:

- the generator alone (rows/s);
- ``seed_catalog`` at N products and at the small size (generation + COPY + triggers + commit);
- a baseline: the same rows, pre-generated, COPYed into an UNLOGGED copy of ``products`` with no
  indexes, triggers, constraints or generated column — before and after everything else, because
  these machines are shared and noisy;
- unless ``--no-breakdown``: a ladder of copies of ``products``, each adding one feature of the
  real table, loaded with the same pre-generated rows, so the cost of each feature is a
  difference between two neighbouring rungs.

It must never touch a database it did not create, and never change the catalog schema itself:
the ladder builds its own tables beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from benchmarks.kit.results import Results
from benchmarks.kit.stack import ScratchDatabases
from catalog.generator import (
    PRODUCT_COLUMNS,
    SELLER_COLUMNS,
    ProductRow,
    iter_products,
    iter_sellers,
)
from catalog.seed import seed_catalog

GOAL_SECONDS_150K = 15.0


@dataclass(frozen=True)
class Timing:
    label: str
    rows: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def time_generator(products: int, seed: int) -> Timing:
    started = time.perf_counter()
    count = sum(1 for _ in iter_products(products, seed=seed))
    return Timing("generator alone (no database)", count, time.perf_counter() - started)


async def time_seed(dbs: ScratchDatabases, products: int, seed: int, batch: int) -> tuple[Timing, Timing]:
    conn = await dbs.fresh(f"seed{products}")
    try:
        started = time.perf_counter()
        result = await seed_catalog(conn, products, seed=seed, batch=batch)
        total = time.perf_counter() - started
        outbox = await conn.fetchval("SELECT count(*) FROM search_outbox")
    finally:
        await conn.close()
    load = Timing(
        f"seed_catalog {products:,} (load txn)",
        products,
        result.load_seconds,
        f"outbox rows {outbox:,}; one COPY, loop turn every {batch:,}",
    )
    whole = Timing(f"seed_catalog {products:,} (+ ANALYZE)", products, total, f"ANALYZE {result.analyze_seconds:.2f}s")
    return load, whole


async def _copy_timed(conn: asyncpg.Connection, table: str, rows: Sequence[ProductRow]) -> float:
    # One COPY in one transaction, like seed_catalog, so the two differ only in what we measure.
    started = time.perf_counter()
    async with conn.transaction():
        await conn.copy_records_to_table(table, records=rows, columns=list(PRODUCT_COLUMNS))
    return time.perf_counter() - started


async def _index_definitions(conn: asyncpg.Connection) -> dict[str, str]:
    records = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'products'")
    return {r["indexname"]: r["indexdef"] for r in records}


def _on_table(definition: str, table: str, name: str) -> str:
    # "CREATE INDEX products_x ON public.products USING ..." → same index on the rung's table.
    head, _, tail = definition.partition(" ON public.products ")
    unique = "UNIQUE " if head.startswith("CREATE UNIQUE") else ""
    return f"CREATE {unique}INDEX {name} ON {table} {tail}"


# Each rung: a label and the SQL that adds its feature to the previous rung's table "{t}".
_GIN = ("products_search_tsv_idx", "products_name_trgm_idx")


def _ladder(indexes: dict[str, str]) -> list[tuple[str, list[str]]]:
    btree = [name for name in indexes if name not in _GIN]
    return [
        ("logged table (vs UNLOGGED baseline)", []),
        ("+ generated search_tsv column", ["__generated__"]),
        (
            "+ CHECK constraints, PK and 6 btree indexes",
            ["__checks__"] + [_on_table(indexes[n], "{t}", f"{{t}}_{i}") for i, n in enumerate(btree)],
        ),
        ("+ GIN index on search_tsv", [_on_table(indexes["products_search_tsv_idx"], "{t}", "{t}_tsv")]),
        ("+ GIN trigram index on name", [_on_table(indexes["products_name_trgm_idx"], "{t}", "{t}_trgm")]),
        (
            "+ outbox trigger (row + pg_notify)",
            [
                "CREATE TRIGGER {t}_outbox AFTER INSERT OR DELETE ON {t} FOR EACH ROW "
                "EXECUTE FUNCTION search_outbox_product_change()"
            ],
        ),
        (
            "+ foreign key to sellers (= real table)",
            ["ALTER TABLE {t} ADD FOREIGN KEY (seller_id) REFERENCES sellers (id)"],
        ),
    ]


async def time_ladder(dbs: ScratchDatabases, rows: Sequence[ProductRow], seed: int) -> list[Timing]:
    conn = await dbs.fresh("ladder")
    timings: list[Timing] = []
    try:
        # The ladder's top rung needs the sellers its rows refer to.
        await conn.copy_records_to_table(
            "sellers", records=list(iter_sellers(len(rows), seed=seed)), columns=list(SELLER_COLUMNS)
        )
        indexes = await _index_definitions(conn)
        applied: list[str] = []
        for rung, (label, additions) in enumerate(_ladder(indexes)):
            applied += additions
            table = f"rung{rung}"
            generated = "__generated__" in applied
            checks = "__checks__" in applied
            like = "LIKE products INCLUDING DEFAULTS"
            like += " INCLUDING GENERATED" if generated else ""
            like += " INCLUDING CONSTRAINTS" if checks else ""
            await conn.execute(f"CREATE TABLE {table} ({like})")
            if checks:
                await conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
            for sql in applied:
                if not sql.startswith("__"):
                    await conn.execute(sql.format(t=table))
            seconds = await _copy_timed(conn, table, rows)
            timings.append(Timing(label, len(rows), seconds))
            await conn.execute(f"DROP TABLE {table}")
            # Keep the outbox from growing across rungs: each rung should pay the same.
            await conn.execute("TRUNCATE search_outbox")
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return timings


async def time_baseline(dbs: ScratchDatabases, rows: Sequence[ProductRow], label: str) -> Timing:
    conn = await dbs.fresh("baseline")
    try:
        # No generated column (LIKE without INCLUDING GENERATED makes search_tsv a plain,
        # empty column), no indexes, no triggers, no constraints but NOT NULL, no WAL.
        await conn.execute("CREATE UNLOGGED TABLE baseline_products (LIKE products)")
        seconds = await _copy_timed(conn, "baseline_products", rows)
    finally:
        await conn.close()
    return Timing(label, len(rows), seconds)


def _print_table(timings: Sequence[Timing], baselines: dict[int, float]) -> None:
    print(f"\n{'measurement':<46} {'rows':>9} {'seconds':>8} {'rows/s':>9} {'x base':>7}  note")
    print("-" * 100)
    for t in timings:
        # Each row against the baseline that loaded the same number of rows.
        base = baselines.get(t.rows)
        ratio = f"{t.seconds / base:6.2f}x" if base else ""
        print(f"{t.label:<46} {t.rows:>9,} {t.seconds:>8.2f} {t.rate:>9,.0f} {ratio:>7}  {t.note}")


def _print_ladder(ladder: Sequence[Timing], baseline: float) -> None:
    print(
        f"\n{'breakdown (pre-generated rows, each rung adds one feature)':<60} {'seconds':>8} "
        f"{'+seconds':>9} {'x base':>7}"
    )
    print("-" * 90)
    previous = baseline
    print(f"{'UNLOGGED baseline (mean)':<60} {baseline:>8.2f} {'':>9} {1:>6.2f}x")
    for t in ladder:
        print(f"{t.label:<60} {t.seconds:>8.2f} {t.seconds - previous:>+9.2f} {t.seconds / baseline:>6.2f}x")
        previous = t.seconds


async def run(admin_url: str, args: argparse.Namespace, results: Results) -> None:
    dbs = ScratchDatabases(admin_url)
    try:
        timings: list[Timing] = []
        gen = time_generator(args.products, args.seed)
        timings.append(gen)
        print(f"generator: {gen.rows:,} rows in {gen.seconds:.2f}s ({gen.rate:,.0f} rows/s)", flush=True)

        rows = list(iter_products(args.products, seed=args.seed))
        base_before = await time_baseline(dbs, rows, "baseline COPY, UNLOGGED (before)")
        print(f"baseline before: {base_before.seconds:.2f}s", flush=True)

        seed_load, seed_total = await time_seed(dbs, args.products, args.seed, args.batch)
        print(f"seed {args.products:,}: {seed_total.seconds:.2f}s", flush=True)
        timings += [base_before, seed_load, seed_total]
        if args.small:
            small_load, small_total = await time_seed(dbs, args.small, args.seed, args.batch)
            timings += [small_load, small_total]
            print(f"seed {args.small:,}: {small_total.seconds:.2f}s", flush=True)

        ladder: list[Timing] = []
        if not args.no_breakdown:
            ladder = await time_ladder(dbs, rows, args.seed)
            print("breakdown done", flush=True)

        base_after = await time_baseline(dbs, rows, "baseline COPY, UNLOGGED (after)")
        timings.append(base_after)
        baseline = (base_before.seconds + base_after.seconds) / 2

        # Baseline rows for the small seed: same table, first `small` rows.
        if args.small:
            small_base = await time_baseline(dbs, rows[: args.small], f"baseline COPY, UNLOGGED, {args.small:,} rows")
            timings.append(small_base)

        baselines = {args.products: baseline}
        if args.small:
            baselines[args.small] = small_base.seconds
        _print_table(timings, baselines)
        print(
            "(x base: against the UNLOGGED baseline of the same row count; at full size, the "
            "mean of the before and after runs)"
        )
        if ladder:
            _print_ladder(ladder, baseline)
        verdict = "within" if seed_total.seconds <= GOAL_SECONDS_150K else "OVER"
        judged = args.products == 150_000  # the goal is stated for that size only
        results.add(
            f"seed_catalog, {args.products:,} products (generation + COPY + triggers + ANALYZE)",
            seed_total.seconds,
            "s",
            baseline=baseline,
            baseline_label="plain COPY of the same rows into an UNLOGGED bare table",
            goal=f"< {GOAL_SECONDS_150K:.0f} s at 150,000 products",
            met=seed_total.seconds <= GOAL_SECONDS_150K if judged else None,
            notes=f"{seed_total.rate:,.0f} rows/s; load transaction {seed_load.seconds:.2f} s; "
            f"generator alone {gen.seconds:.2f} s ({gen.seconds / seed_total.seconds:.0%} of it)",
        )
        results.add("sample-catalog generator alone", gen.rate, "rows/s")
        if args.products == 150_000:
            print(
                f"\ngoal: 150,000 products in < {GOAL_SECONDS_150K:.0f}s — measured "
                f"{seed_total.seconds:.2f}s ({verdict}); generator share ≈ "
                f"{gen.seconds / seed_total.seconds:.0%}"
            )
    finally:
        await dbs.drop_all()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.seed", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--products", type=int, default=150_000)
    parser.add_argument("--small", type=int, default=20_000, help="also time seed_catalog at this size (0: skip)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--batch", type=int, default=10_000, help="seed_catalog's batch: products between event-loop turns"
    )
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-feature ladder (the slowest part)")
    parser.add_argument("--database-url", help="use this server (needs CREATEDB) instead of an embedded one")
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/report.py reads them)")
    args = parser.parse_args(argv)
    results = Results("seed")
    try:
        return _main(args, results)
    finally:
        if args.json:
            results.write(args.json)


def _main(args: argparse.Namespace, results: Results) -> int:
    if args.database_url:
        asyncio.run(run(args.database_url, args, results))
        return 0

    from benchmarks.kit.stack import start_postgres

    with tempfile.TemporaryDirectory(prefix="hos-bench-seed-") as workdir:
        server = start_postgres(Path(workdir))
        try:
            print(f"postgres: {server.url} (pid {server.pid})", flush=True)
            asyncio.run(run(server.url, args, results))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
