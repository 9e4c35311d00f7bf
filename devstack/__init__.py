"""Embedded servers for development and tests: Postgres, Redis and the search engine.

Used only by the ``hos-search dev`` command, the test suite and the benchmarks under ``benchmarks/``;
the services never import it.
"""
