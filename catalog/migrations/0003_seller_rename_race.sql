-- A seller rename appends outbox rows only for the products its trigger can see. A product
-- inserted (or moved to that seller) by a transaction that has not committed yet is invisible
-- to it, so if that transaction commits, the indexer fetches the product with the old seller
-- name, and the rename then commits, nothing ever re-indexes the product with the new name
-- (found by tests/test_indexer_chaos.py).
--
-- The fix: a product write that attaches a product to a seller takes a SHARE lock on the
-- seller row. The foreign-key check only takes KEY SHARE, which a rename (NO KEY UPDATE) does
-- not wait for; SHARE conflicts with it, so a rename and such a product write are serialised:
-- whichever comes second sees the other's committed row.
CREATE OR REPLACE FUNCTION search_outbox_product_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO search_outbox (product_id, op) VALUES (OLD.id, 'delete');
    ELSE
        IF TG_OP = 'INSERT' THEN
            PERFORM 1 FROM sellers WHERE id = NEW.seller_id FOR SHARE;
        ELSIF NEW.seller_id IS DISTINCT FROM OLD.seller_id THEN
            PERFORM 1 FROM sellers WHERE id = NEW.seller_id FOR SHARE;
        END IF;
        -- 'upsert' also covers a status change away from active: the indexer reads the
        -- current row and deletes the document when the product is no longer searchable.
        INSERT INTO search_outbox (product_id, op) VALUES (NEW.id, 'upsert');
    END IF;
    -- A constant payload: Postgres folds identical notifications within one transaction,
    -- so a bulk load rings the doorbell once instead of once per row.
    PERFORM pg_notify('search_outbox', 'products');
    RETURN NULL;
END;
$$;
