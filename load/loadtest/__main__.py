"""``python -m load.loadtest``: see :mod:`load.loadtest.runner`."""

import sys

from load.loadtest.runner import main

sys.exit(main())
