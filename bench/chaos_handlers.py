"""The chaos soak's handlers (INBOX_HANDLERS=bench.chaos_handlers).

Every Stripe fixture type gets the same handler: one row in `chaos_effects` (made by
bench/chaos.py, deliberately without a unique key, so an event applied twice shows as two
rows instead of being hidden by a constraint) and one outbox message routed to the sink.

Only the worker processes import this module: imported by the soak's own process (a test
run) it would register these handlers beside the example `handlers` of other tests.
"""

from __future__ import annotations

import time

from inbox import handler
from inbox.fixtures import stripe_event_types

# bench/chaos.py routes "chaos.*" to its sink and reads the messages by that prefix.
TOPIC = "chaos.effect"
# An event whose id holds this marker (bench/chaos.py's kind "stall") stalls on its first
# attempt, so the backlog phase can SIGKILL a worker while it holds a full batch (as
# bench/rescue.py's stall_once).
STALL_MARKER = "_stall_"
STALL_SECONDS = 120.0


def apply(event, tx) -> None:
    """The effect, then its message: both commit with the event's status, or neither."""
    tx.execute("INSERT INTO chaos_effects (event_id, attempt) VALUES (%s, %s)",
               [event.id, event.attempt])
    tx.outbox(TOPIC, {"event": event.id})
    if STALL_MARKER in event.id and event.attempt == 1:
        time.sleep(STALL_SECONDS)  # killed here; the effect above rolls back


for _type in stripe_event_types():
    handler("stripe", _type)(apply)
