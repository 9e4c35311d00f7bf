"""The search indexer: a sidecar that keeps the search index equal to the active products.

Postgres triggers append every product change to ``search_outbox`` and ring a NOTIFY doorbell;
the indexer reads the outbox from its checkpoint, writes the current rows to the engine and only
then advances the checkpoint. Never imports the proxy.
"""
