"""The Postgres fallback: search, suggestions and detail pages answered from the catalog database.

``sql`` builds the statements and the engine-shaped answers (pure); ``postgres`` runs them on a
bounded pool of its own.
"""
