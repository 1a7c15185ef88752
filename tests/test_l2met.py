"""The l2met metrics line: its format, the system's samples read from the database, and the
process's own counts, logged once per interval."""

from __future__ import annotations

import logging

from inbox.metrics import l2met
from inbox.store import system_state


def test_a_line_names_the_source_then_samples_then_counts():
    line = l2met.format_line("worker.1", {"inbox.due": 12, "inbox.oldest_due_seconds": 3.25},
                             {"inbox.processed": 812})
    assert line == ("source=worker.1 sample#inbox.due=12 sample#inbox.oldest_due_seconds=3.25"
                    " count#inbox.processed=812")


def test_the_samples_are_the_system_state_and_the_counts_this_process(db, caplog):
    db.execute("INSERT INTO inbox (provider, event_id, event_type, payload, raw_body, status,"
               " next_attempt_at) VALUES ('stripe', 'evt_1', 't', '{}', '', 'pending',"
               " now() - interval '5 seconds'), ('stripe', 'evt_2', 't', '{}', '', 'dead', now())")
    counts = l2met.ProcessCounts()
    logger = l2met.MetricsLogger("relay.1", 60, lambda: system_state.read(db), counts)
    counts.add("outbox.sent", 3)
    counts.add("outbox.sent")

    with caplog.at_level(logging.INFO, logger="inbox.metrics"):
        assert logger.log_if_due(now=1000.0) is None  # the first interval starts
        assert logger.log_if_due(now=1059.0) is None
        line = logger.log_if_due(now=1060.0)
        again = logger.log_once()

    assert line is not None and line.startswith("source=relay.1 ")
    fields = dict(part.split("=", 1) for part in line.split())
    assert fields["sample#inbox.due"] == "1"
    assert 5 <= float(fields["sample#inbox.oldest_due_seconds"]) < 65
    assert fields["sample#inbox.dead"] == "1"
    assert fields["sample#outbox.pending"] == "0"
    assert fields["count#outbox.sent"] == "4"
    assert "count#" not in again  # counted once, in the line after the work
    assert [r.getMessage() for r in caplog.records] == [line, again]


def test_a_database_that_cannot_answer_leaves_the_counts(caplog):
    def broken() -> None:
        raise OSError("no database")

    counts = l2met.ProcessCounts()
    counts.add("inbox.processed", 2)
    with caplog.at_level(logging.INFO, logger="inbox.metrics"):
        line = l2met.MetricsLogger("worker.1", 60, broken, counts).log_once()
    assert line == "source=worker.1 count#inbox.processed=2"
