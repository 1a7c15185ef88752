"""CPU of one worker attempt line, logged in batches of 100 into a file:
`python -m bench.attempt_line_cpu text|json` (docs/decisions.md, "Structured log lines,
one logging call per batch")."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime

from inbox.logs import configure_logging
from inbox.worker.loop import log_attempts
from inbox.worker.store import ClaimedEvent, Lease, Outcome

BATCHES = 2000


def main(log_format: str) -> None:
    configure_logging(log_format=log_format)
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_inbox", False))
    path = os.path.join(tempfile.gettempdir(), "attempt_line_cpu.log")
    with open(path, "w") as out:
        handler.setStream(out)
        now = datetime.now(UTC)
        events = [ClaimedEvent(Lease(i, 1, 1, now, "w"), "stripe", f"evt_{i:024d}",
                               "invoice.paid", 0, now) for i in range(100)]
        outcomes = [Outcome(e.lease, "processed", "processed", started_at=now) for e in events]
        millis: list[float | None] = [1.23] * len(events)
        started = time.process_time()
        for _ in range(BATCHES):
            log_attempts(events, outcomes, millis)
        per_line = (time.process_time() - started) / (BATCHES * len(events)) * 1e6
    print(f"{log_format}: {per_line:.2f} us of CPU per attempt line (batches of 100)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "text")
