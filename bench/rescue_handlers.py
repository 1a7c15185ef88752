"""The rescue benchmark's handlers (INBOX_HANDLERS=bench.rescue_handlers)."""

from __future__ import annotations

import random
import time

from inbox import handler


@handler("bench", "noop")
def noop(event, tx) -> None:
    """No SQL: a batch of these is one transaction, leased whole until it commits."""
    tx.outbox("bench.noop", {"bench": True})


@handler("bench", "stall_once")
def stall_once(event, tx) -> None:
    """Holds its worker, and the batch it leased, on the first attempt: killed there."""
    if event.attempt == 1:
        time.sleep(3600)


@handler("bench", "slow")
def slow(event, tx) -> None:
    """20-80 ms of work, as in the repeated-kill report of issue 18."""
    time.sleep(random.uniform(0.02, 0.08))
    tx.outbox("bench.slow", {"bench": True})
