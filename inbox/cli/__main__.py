"""`python -m inbox.cli ...` is the `inbox` command (tests run it from a subprocess)."""

import sys

from inbox.cli import main

sys.exit(main())
