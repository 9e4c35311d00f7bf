-- The indexer computes each document's external version as the highest outbox seq of its
-- product (see indexer/batch.py); without this index every batch scans the outbox's tail.
CREATE INDEX search_outbox_product_seq_idx ON search_outbox (product_id, seq);

-- The indexer re-reads the rows of transactions that were in progress at its last read
-- (indexer/outbox.py); this keeps that lookup proportional to their rows, not to everything
-- written since, when a long transaction stays open.
CREATE INDEX search_outbox_txid_seq_idx ON search_outbox (txid, seq);

-- The indexer's out-of-order-commit handling (indexer/outbox.py) relies on two facts about
-- this table; keep them true:
--   1. rows come only from the catalog triggers, which fire after the product or seller row
--      is written, so a transaction has its xid before it draws a seq;
--   2. the identity sequence keeps CACHE 1, so seqs are drawn in real time order.
COMMENT ON TABLE search_outbox IS
    'Product changes for the search indexer. Written only by the catalog triggers; '
    'the seq identity must keep CACHE 1 (see indexer/outbox.py).';
