-- The vocabulary the fallback's typo strategy corrects typed words against (proxy/fallback/sql.py):
-- every word of an active product's name, fandom and category, as the 'simple' configuration
-- makes lexemes of them for search_tsv. Before it, the typo strategy compared the whole query
-- with every product name through the trigram index: `hary poter` at 150,000 products rechecked
-- and scored ~10,000 candidate names (a Bitmap Heap Scan of 8,329 pages, 150–650 ms alone, and
-- 32 of 1,240 answers past the 1 s statement timeout with 4 clients; fallback-profile-2026-12-06.md
-- and the 2026-12-06 make bench report). Now each typed word looks up its nearest words here (a
-- GiST trigram index, nearest first, a few ms over ~10,000 words) and the ordinary full-text
-- query runs with them.
--
-- Kept by triggers, not a materialized view: the fallback reads a replica, and rows written in
-- the product's own transaction reach the replica in the same WAL, so a replica never holds a
-- product whose words it cannot correct to. A view would need a REFRESH on the primary —
-- recomputing every active name (the backfill below) — on a schedule, stale in between.
-- Words are only added: removing one would need to know that no other product still has it,
-- under concurrent writes. A word left behind by a renamed or archived product is harmless:
-- the corrected query then matches no product through it (sql.py asks for a few corrections
-- per word, so a stale one cannot crowd out the live ones alone).
CREATE TABLE search_words (
    word text PRIMARY KEY
);

CREATE INDEX search_words_trgm_idx ON search_words USING gist (word gist_trgm_ops);

-- The words of products, sorted, so that two transactions adding the same new words take their
-- index entries in the same order (no deadlock between bulk loads).
CREATE FUNCTION search_words_add_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_words (word)
    SELECT DISTINCT w
      FROM inserted,
           unnest(tsvector_to_array(to_tsvector('simple', inserted.name || ' ' || inserted.fandom || ' ' || inserted.category))) AS w
     WHERE inserted.status = 'active'
     ORDER BY w
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

-- Once per statement: a bulk load (the seed's 150,000 rows, COPY included) adds its words in one
-- INSERT instead of one per product.
CREATE TRIGGER products_search_words_ins
    AFTER INSERT ON products
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION search_words_add_inserted();

CREATE FUNCTION search_words_add_updated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_words (word)
    SELECT DISTINCT w
      FROM unnest(tsvector_to_array(to_tsvector('simple', NEW.name || ' ' || NEW.fandom || ' ' || NEW.category))) AS w
     ORDER BY w
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

-- Per row, and only when a word could have changed: the common update (price, stock) does not
-- call it at all. (A statement trigger with a transition table cannot name columns.)
CREATE TRIGGER products_search_words_upd
    AFTER UPDATE ON products
    FOR EACH ROW
    WHEN (NEW.status = 'active' AND (OLD.name, OLD.fandom, OLD.category, OLD.status)
          IS DISTINCT FROM (NEW.name, NEW.fandom, NEW.category, NEW.status))
    EXECUTE FUNCTION search_words_add_updated();

INSERT INTO search_words (word)
SELECT DISTINCT w
  FROM products, unnest(tsvector_to_array(to_tsvector('simple', name || ' ' || fandom || ' ' || category))) AS w
 WHERE status = 'active'
ON CONFLICT DO NOTHING;
