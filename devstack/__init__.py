"""Embedded servers for development and tests: Postgres, Redis and the search engine.

Used only by the ``hos-search dev`` command and the test suite; the services never import it.
"""
