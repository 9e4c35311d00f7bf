-- Indexes for the proxy's Postgres fallback search (proxy/fallback/sql.py), which only reads
-- active products. Without them, at 150,000 products, two of its statements read the whole
-- table (plans in the fallback's notes: EXPLAIN ANALYZE on the 150k sample catalog):
--
-- Browsing (no query text) counts every active product into the category, fandom and price
-- facets. With this covering index that is an index-only scan (~1,000 pages) instead of a
-- sequential scan of the heap (~12,500 pages); stock and seller_id ride along for the
-- in_stock and seller_id filters.
CREATE INDEX products_active_facets_idx ON products (category, fandom, price)
    INCLUDE (stock, seller_id) WHERE status = 'active';

-- sort=rating, and suggestions (best rated first): walked in order, stopping at the page.
-- The tie-break is the id as text, as the engine sorts its `id` keyword, so both backends
-- page in the same order.
CREATE INDEX products_active_rating_idx ON products (rating DESC NULLS LAST, (id::text) COLLATE "C")
    WHERE status = 'active';
