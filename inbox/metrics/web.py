"""The web process's own metrics: its answers to webhooks and its group commits.

Counted where they happen (inbox/web/webhooks.py, inbox/web/__init__.py) at a cost
of a few microseconds per request. Under gunicorn the values live in files of the
multiprocess directory (`multiprocess.py`), so a scrape answered by any of a dyno's web
processes adds up all of them, and a restarted process's counts are kept.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# The metrics of this module live in their own registry, not prometheus-client's global
# one: a scrape in multiprocess mode reads the files instead, and a process that never
# serves metrics (a test making several apps) registers nothing twice.
REGISTRY = CollectorRegistry(auto_describe=True)

# Outcomes of a webhook request, as the request log line names them (the contract's
# seven, plus the answers a provider should never get: a wrong method, a bug; and
# `forbidden`, a Stripe delivery from outside Stripe's addresses, inbox/web/allowlist.py).
OUTCOMES = ("stored", "duplicate", "invalid_signature", "invalid_event", "too_large",
            "unknown_provider", "unavailable", "method_not_allowed", "bad_request",
            "internal_error", "forbidden")
# The provider label of a request for a path no provider serves: the path is what a client
# typed, and a label per typed value would let anyone grow the metrics without bound.
UNKNOWN_PROVIDER = "unknown"

WEBHOOK_REQUESTS = Counter(
    "inbox_webhook_requests", "Webhook requests this web deployment answered, by outcome.",
    ["provider", "outcome"], registry=REGISTRY,
)
WEBHOOK_SECONDS = Histogram(
    "inbox_webhook_request_seconds",
    "Time from a webhook request's arrival to its answer (verify, store, commit).",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
GROUP_COMMIT_EVENTS = Histogram(
    "inbox_group_commit_events", "Events stored by one insert of the receiver's group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY,
)


def record_answer(provider: str, outcome: str, seconds: float) -> None:
    """Count one webhook answer."""
    WEBHOOK_REQUESTS.labels(provider, outcome).inc()
    WEBHOOK_SECONDS.observe(seconds)


def record_group_commit(events: int) -> None:
    """Count one insert of the group commit and how many events it carried."""
    GROUP_COMMIT_EVENTS.observe(events)
