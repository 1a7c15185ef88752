"""Alerts: an operator is told when an event or a message goes dead, when the backlog
grows old, and when deliveries fail their signature check.

Alerts are outbox messages (topics `inbox.alert.<kind>`), so INBOX_ROUTES sends them where
the operator wants them (a Slack incoming webhook, an email) with the relay's retries.
`kinds.py` says what each kind means and writes its text; `coalesce.py` holds occurrences
and turns them into at most one message per kind per INBOX_ALERT_INTERVAL_SECONDS;
`watch.py` is the periodic look every process takes (the backlog, held alerts whose
interval has ended).
"""
