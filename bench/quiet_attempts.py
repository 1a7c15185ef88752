"""The drain's no-op handlers with the worker's per-attempt log lines turned off
(INBOX_HANDLERS=bench.noop_handlers,bench.quiet_attempts): the "without" side of
`python -m bench.attempt_lines`."""

from __future__ import annotations

import logging

logging.getLogger("inbox.worker.loop").setLevel(logging.WARNING)
