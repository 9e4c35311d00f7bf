"""The search proxy: the storefront's HTTP API in front of the search engine."""
