"""The proxy's middlewares, one per file, outermost first in :func:`proxy.app.create_app`."""
