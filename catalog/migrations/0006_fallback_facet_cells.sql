-- The fallback's facet cells (proxy/fallback/sql.py): every browse (no query text) groups all
-- active products by category, fandom and price bucket, because a disjunctive facet counts
-- with every filter but its own. At 150,000 products, on 0004's (category, fandom, price)
-- index, that grouping was 400 ms of the 608 ms of `category=figures` (EXPLAIN ANALYZE on a busy
-- machine): `width_bucket(price, …)` computed for each of the ~127,500 rows, then hashed. The
-- grouping alone: 460 ms there, 195 ms with the bucket stored in the index, in group order — an
-- index-only scan streamed into a GroupAggregate, no per-row arithmetic, no hash table
-- (benchmarks/results/fallback-profile-2026-12-06.md).
--
-- The expression must stay exactly the fallback's (sql._PRICE_BOUNDS, from
-- catalog.mapping.PRICE_BUCKETS; tests/test_fallback.py checks both): with other bounds the
-- planner no longer matches it and browsing falls back to computing every bucket again.
-- price, stock and seller_id ride along for the price, in_stock and seller_id filters.
CREATE INDEX products_active_cells_idx
    ON products (category, fandom, width_bucket(price, '{10.0,20.0,50.0,100.0,250.0}'::numeric[]))
    INCLUDE (price, stock, seller_id) WHERE status = 'active';

-- Its predecessor from 0004 serves nothing this one does not, and costs every product write.
DROP INDEX products_active_facets_idx;
