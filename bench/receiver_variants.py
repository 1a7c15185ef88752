"""Variants of the receiver, measured beside it to size a proposed change before making it.

`gunicorn ... 'bench.receiver_variants:create_app("no_wake")'` serves the product's
receiver with one change patched in, in that process only; `python -m bench ingest
--variants` measures each against the receiver as it is and the bare endpoint. Proposals
for inbox/, not changes to it. (Earlier proposals now in the product: the wake-up after the
insert's commit, then from one coalescing thread per process; no connection check per
request; the webhook route outside Flask's request handling.)

- wake_gap_5ms, wake_gap_1ms: the notifier rests 5 ms (its setting until the fifth
  session) or 1 ms after each NOTIFY instead of 10 (inbox/web/wakeup.py has the
  latency measurements; at ~1,000 req/s 10 ms saved ~60 us of CPU per request against 5).
- no_wake: no NOTIFY at all (workers would rely on polling): the most a wake-up can cost.
- no_group: each request inserts its own event on a pooled connection, as before group
  commit (inbox/web/group_commit.py).
- no_log: no request log line: the most the log line can cost.
- notify_in_insert: the insert notifies the workers itself, in its own statement (a CTE),
  when it stored anything; no notifier thread, no NOTIFY transaction, no rest between NOTIFYs.
  Measured in the fifth session (`--rounds 3 --variants notify_in_insert no_wake`, one
  run): 1,622 req/s against the receiver's 1,500 and no_wake's 1,596, web CPU 801 against
  880 us per request; at 500 events/s no better latency (`bench latency
  --receiver-variant notify_in_insert`: p50 20.2 ms, within the runs' spread). Not
  adopted: a notifying transaction holds PostgreSQL's notify lock through its commit's
  WAL flush, so notifying inserts from many web processes (several dynos) commit one at a
  time, cluster-wide (docs/decisions.md, "NOTIFY serialises durable commits").
- no_db: every event answered as stored without touching the database: what the web
  process spends on storing (the insert's client side, group commit, the wake-up).
- no_verify: no signature check: what verifying costs under load.
- no_metrics: no counting of answers and group commits for /metrics (inbox/metrics/web.py):
  what the web's own metrics cost the ingest path.
"""

from __future__ import annotations

from flask import Flask

VARIANTS = ("wake_gap_5ms", "wake_gap_1ms", "no_wake", "no_group", "no_log",
            "notify_in_insert", "no_db", "no_verify", "no_metrics")


def create_app(variant: str = "as_is") -> Flask:
    from inbox.web import wakeup

    if variant == "wake_gap_5ms":
        wakeup.COALESCE_SECONDS = 0.005
    elif variant == "wake_gap_1ms":
        wakeup.COALESCE_SECONDS = 0.001
    elif variant == "no_wake":
        wakeup.WakeNotifier.wake = lambda self: None  # type: ignore[method-assign]
    elif variant == "no_group":
        from inbox.web.group_commit import GroupCommit

        def insert_alone(self, event):
            [result] = self._insert_many([event])
            if isinstance(result, Exception):
                raise result
            if result:
                self._committed()
            return result
        GroupCommit.insert = insert_alone  # type: ignore[method-assign]
    elif variant == "notify_in_insert":
        from inbox import queries
        from inbox.web import store as receiver

        insert = queries.query("inbox_insert").rstrip().rstrip(";")
        body = insert.split("INSERT INTO", 1)[1].rsplit("RETURNING", 1)[0]
        notifying = (
            "WITH stored AS (INSERT INTO" + body + "RETURNING provider, event_id)\n"
            "SELECT provider, event_id FROM stored\n"
            "WHERE (SELECT count(pg_notify('inbox_events', ''))"
            " FROM (SELECT FROM stored LIMIT 1) AS new) >= 0"
        )
        receiver.query = lambda name: notifying if name == "inbox_insert" else queries.query(name)
        wakeup.WakeNotifier.wake = lambda self: None  # type: ignore[method-assign]
    elif variant == "no_log":
        import logging

        logging.getLogger("inbox.web").disabled = True
    elif variant == "no_db":
        from inbox.web.group_commit import GroupCommit

        GroupCommit.insert = lambda self, event: True  # type: ignore[method-assign]
    elif variant == "no_verify":
        from inbox.providers.stripe import StripeProvider

        StripeProvider.verify = lambda self, body, header: None  # type: ignore[method-assign]
    elif variant == "no_metrics":
        from inbox.metrics import web as web_metrics

        web_metrics.record_answer = lambda provider, outcome, seconds: None
        web_metrics.record_group_commit = lambda events: None
    elif variant != "as_is":
        raise SystemExit(f"unknown receiver variant {variant!r}; known: {', '.join(VARIANTS)}")
    from inbox.web import create_app as product_app

    return product_app()
