"""``python -m loadtest``: see :mod:`loadtest.runner`."""

import sys

from loadtest.runner import main

sys.exit(main())
