"""``python -m millpond``: the same as the ``millpond`` command."""

import sys

from millpond.cli import main

sys.exit(main())
