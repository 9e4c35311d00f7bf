-- The fallback's text searches read their matches here (proxy/fallback/sql.py): a narrow copy of
-- the active products holding only what a text search filters, counts, sorts and ranks on. In
-- `products` the ~30,400 matches of `harry potter` at 150,000 products lay on 12,099 of its
-- 12,544 pages (wide rows: description, image URL, …), and reading them was the statement's cost
-- (EXPLAIN (ANALYZE, BUFFERS), fallback-profile-2026-12-06.md). On a scratch copy, this table
-- (6,912 pages) took the match and facets from 106 ms to 85 ms, and to 62 ms with its rows in
-- fandom order (fallback-facets-2026-12-06.md): one fandom's matches then share pages. The page's
-- product rows still come from `products`, by id.
--
-- Kept by triggers for the reason 0007's `search_words` is: the fallback reads a replica, which
-- receives this table's rows in the same WAL as the product's. Unlike `search_words` it is kept
-- exactly: a product is here, with its current values, if and only if it is active. search_tsv is
-- copied from the products row (a generated column, already computed when an AFTER trigger runs),
-- never recomputed here, so the two cannot disagree on what a product's words are.
CREATE TABLE product_search (
    id          bigint        PRIMARY KEY,
    seller_id   bigint        NOT NULL,
    category    text          NOT NULL,
    fandom      text          NOT NULL,
    price       numeric(10,2) NOT NULL,
    stock       integer       NOT NULL,
    rating      numeric(2,1),
    created_at  timestamptz   NOT NULL,
    search_tsv  tsvector      NOT NULL
);

CREATE INDEX product_search_tsv_idx ON product_search USING gin (search_tsv);

-- Per statement, with transition tables: a bulk load (the seed's 150,000-row COPY, a
-- `seed --replace`'s DELETE of every product) costs one INSERT or DELETE here, not one trigger
-- call per product. Inserted rows go in fandom order so that a bulk load lays one fandom's
-- products on neighbouring pages, as the backfill below does.
CREATE FUNCTION product_search_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO product_search (id, seller_id, category, fandom, price, stock, rating, created_at, search_tsv)
    SELECT id, seller_id, category, fandom, price, stock, rating, created_at, search_tsv
      FROM inserted
     WHERE status = 'active'
     ORDER BY fandom, id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER products_product_search_ins
    AFTER INSERT ON products
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION product_search_inserted();

-- A product that is no longer active (or whose id changed) leaves; an active one whose copied
-- columns, status or words changed is written whole. Unchanged rows (an edit of the image URL,
-- of updated_at) are not touched. Concurrent writers of one product are already serialized by
-- its row lock in `products`, held until they commit.
CREATE FUNCTION product_search_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM product_search s
     USING old_rows o
      LEFT JOIN new_rows n ON n.id = o.id
     WHERE s.id = o.id
       AND (n.id IS NULL OR n.status <> 'active');
    INSERT INTO product_search (id, seller_id, category, fandom, price, stock, rating, created_at, search_tsv)
    SELECT n.id, n.seller_id, n.category, n.fandom, n.price, n.stock, n.rating, n.created_at, n.search_tsv
      FROM new_rows n
      LEFT JOIN old_rows o ON o.id = n.id
     WHERE n.status = 'active'
       AND (o.id IS NULL
            OR (o.status, o.seller_id, o.category, o.fandom, o.price, o.stock, o.rating, o.created_at, o.search_tsv)
               IS DISTINCT FROM
               (n.status, n.seller_id, n.category, n.fandom, n.price, n.stock, n.rating, n.created_at, n.search_tsv))
    ON CONFLICT (id) DO UPDATE
       SET seller_id = EXCLUDED.seller_id, category = EXCLUDED.category, fandom = EXCLUDED.fandom,
           price = EXCLUDED.price, stock = EXCLUDED.stock, rating = EXCLUDED.rating,
           created_at = EXCLUDED.created_at, search_tsv = EXCLUDED.search_tsv;
    RETURN NULL;
END;
$$;

CREATE TRIGGER products_product_search_upd
    AFTER UPDATE ON products
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION product_search_updated();

CREATE FUNCTION product_search_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM product_search s USING deleted d WHERE s.id = d.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER products_product_search_del
    AFTER DELETE ON products
    REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION product_search_deleted();

-- A TRUNCATE fires no row or transition-table trigger.
CREATE FUNCTION product_search_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE product_search;
    RETURN NULL;
END;
$$;

CREATE TRIGGER products_product_search_truncate
    AFTER TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION product_search_truncated();

INSERT INTO product_search (id, seller_id, category, fandom, price, stock, rating, created_at, search_tsv)
SELECT id, seller_id, category, fandom, price, stock, rating, created_at, search_tsv
  FROM products
 WHERE status = 'active'
 ORDER BY fandom, id;

ANALYZE product_search;
