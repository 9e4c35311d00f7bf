"""The ``hos-search`` command line: one entry point dispatching to the catalog, the proxy,
the indexer and the dev stack. It imports each part only when its command runs."""
