"""Log setup for the entry points: one line per record on stderr, where dynos log."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: int = logging.INFO) -> None:
    """Send the `inbox` loggers to stderr once; idempotent."""
    logger = logging.getLogger("inbox")
    logger.setLevel(level)
    if not any(getattr(h, "_inbox", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        handler._inbox = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
