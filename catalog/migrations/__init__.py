"""The catalog's SQL migrations, applied in order by :mod:`catalog.migrate` (data files, no code).

A package so that setuptools ships it without warning; never imported for anything else.
"""
