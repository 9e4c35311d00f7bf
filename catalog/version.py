"""The release of hos-search, written once: setup.cfg reads it (``version = attr:``) and so does
the OpenAPI document (``info.version``), which was a hand-written "1.0.0" beside a 0.1.0 package.
A constant rather than package metadata: the image's import check runs without the metadata."""

from typing import Final

VERSION: Final = "0.1.0"
