"""``python -m edgebuf``: the ``edgebuf`` command line (``edgebuf.ops.cli``)."""

import sys

from edgebuf.ops.cli import main

sys.exit(main())
