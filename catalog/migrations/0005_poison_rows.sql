-- Rows the schema accepted but nothing downstream can use, and outbox readers nobody runs
-- any more (issue 23): `created_at =
-- '-infinity'` crashed document building (the indexer crash-looped on it, a reindex aborted,
-- the fallback answered 500), `numeric` accepts 'NaN' (and 'NaN' >= 0 is true in Postgres),
-- and a description had no length limit (one row could exceed the engine's request size).

-- Rows the indexer set aside: it could not build their document, or the engine refused it
-- for the document's own fault. One row per product; a later change of the product retries it
-- (the outbox carries the change) and, once it is indexed or deleted, removes this row.
CREATE TABLE search_dead_letters (
    product_id  bigint      PRIMARY KEY,
    reason      text        NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    attempts    integer     NOT NULL DEFAULT 1
);

-- The constraints that should have been there. NOT VALID: they hold for every new or changed
-- row at once, without failing this migration on rows written before it; `hos-search migrate`
-- then lists the rows that violate each one (catalog/migrate.py, validate_constraints) and
-- validates each constraint no row violates.
ALTER TABLE products
    ADD CONSTRAINT products_created_at_finite CHECK (isfinite(created_at)) NOT VALID,
    ADD CONSTRAINT products_updated_at_finite CHECK (isfinite(updated_at)) NOT VALID,
    ADD CONSTRAINT products_price_finite CHECK (price <> 'NaN') NOT VALID,
    ADD CONSTRAINT products_description_length CHECK (length(description) <= 10000) NOT VALID,
    ADD CONSTRAINT products_image_url_length CHECK (length(image_url) <= 2048) NOT VALID,
    ADD CONSTRAINT products_category_length CHECK (length(category) BETWEEN 1 AND 100) NOT VALID,
    ADD CONSTRAINT products_fandom_length CHECK (length(fandom) BETWEEN 1 AND 100) NOT VALID;

-- When each outbox reader last showed it is alive (issue 23): an abandoned INDEXER_NAME's row
-- held min(last_seq) down and stopped outbox pruning forever. A streaming indexer touches its
-- row whenever it prunes, and forgets rows of other names not seen for
-- INDEXER_CHECKPOINT_EXPIRY_S (indexer/checkpoint.py). updated_at stays "last advanced".
ALTER TABLE search_indexer_checkpoint ADD COLUMN seen_at timestamptz NOT NULL DEFAULT now();
