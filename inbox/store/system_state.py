"""The state of the whole deployment, read from the database in a few cheap statements.

Any process can report it and every one reports the same figures, because they all come
from PostgreSQL: `/metrics` on each web process today, the console's overview and
`inbox status` when they share it.

Counts by status are exact while a table holds fewer than EXACT_COUNT_LIMIT rows, the
figure an operator compares with psql. Above it a `count(*)` would scan millions of rows
on every scrape, so the counts are estimated (and flagged): the statuses that are few by
design (pending, dead events) are still counted through their partial indexes, capped,
and the remaining rows (live rows from the statistics system, minus those) are spread
over the other statuses by ANALYZE's sampled frequencies. docs/decisions.md, "Counts
exact below a million rows", has the measurement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from inbox import db
from inbox.queries import query
from inbox.store.audit import ATTEMPT_OUTCOMES
from inbox.store.ops import INBOX_STATUSES, OUTBOX_STATUSES

# Below this many live rows a table's statuses are counted exactly.
EXACT_COUNT_LIMIT = 1_000_000


@dataclass(frozen=True)
class StatusCounts:
    """One table's rows by status; `estimated` when they are not all counted."""

    by_status: Mapping[str, int]
    estimated: bool


@dataclass(frozen=True)
class Backlog:
    """Rows due now, the oldest one's wait since it became due, and rows leased now."""

    due: int
    oldest_due_seconds: float
    leased: int


@dataclass(frozen=True)
class SystemState:
    """Everything `read()` returns: both tables' counts, backlogs and recent attempts."""

    inbox: StatusCounts
    outbox: StatusCounts
    inbox_backlog: Backlog
    outbox_backlog: Backlog
    attempts_last_minute: Mapping[str, int]


def read(conn: db.Connection, exact_limit: int = EXACT_COUNT_LIMIT) -> SystemState:
    """Read the deployment's state; counts exact below `exact_limit` rows per table."""
    rows = dict(conn.execute(query("system_table_rows")).fetchall())
    inbox_big = rows.get("inbox", 0) >= exact_limit
    outbox_big = rows.get("outbox", 0) >= exact_limit
    few = _few_counts(conn, exact_limit) if inbox_big or outbox_big else {}
    frequencies = _status_frequencies(conn) if few else {}
    inbox = (_estimated(INBOX_STATUSES, rows["inbox"], few["inbox"], frequencies, "inbox",
                        exact_limit)
             if inbox_big else _exact(conn, "system_inbox_counts_exact", INBOX_STATUSES))
    outbox = (_estimated(OUTBOX_STATUSES, rows["outbox"], few["outbox"], frequencies,
                         "outbox", exact_limit)
              if outbox_big else _exact(conn, "system_outbox_counts_exact", OUTBOX_STATUSES))
    backlog = db.dict_cursor(conn).execute(query("system_backlog"), {"cap": exact_limit}
                                           ).fetchone()
    assert backlog is not None
    attempts = dict.fromkeys(ATTEMPT_OUTCOMES, 0)
    attempts.update(dict(conn.execute(query("system_attempts_last_minute")).fetchall()))
    return SystemState(
        inbox=inbox, outbox=outbox,
        inbox_backlog=Backlog(backlog["inbox_due"], backlog["inbox_oldest_due_seconds"],
                              backlog["inbox_leased"]),
        outbox_backlog=Backlog(backlog["outbox_due"], backlog["outbox_oldest_due_seconds"],
                               backlog["outbox_leased"]),
        attempts_last_minute=attempts,
    )


def _exact(conn: db.Connection, query_name: str, statuses: tuple[str, ...]) -> StatusCounts:
    counts = dict.fromkeys(statuses, 0)
    counts.update(dict(conn.execute(query(query_name)).fetchall()))
    return StatusCounts(counts, estimated=False)


def _few_counts(conn: db.Connection, cap: int) -> dict[str, dict[str, int]]:
    """The statuses partial indexes hold, counted up to `cap`, by table."""
    row = db.dict_cursor(conn).execute(query("system_few_counts"), {"cap": cap}).fetchone()
    assert row is not None
    return {"inbox": {"pending": row["inbox_pending"], "dead": row["inbox_dead"]},
            "outbox": {"pending": row["outbox_pending"]}}


def _status_frequencies(conn: db.Connection) -> dict[str, dict[str, float]]:
    """ANALYZE's sampled share of each common status, by table."""
    found: dict[str, dict[str, float]] = {}
    for table, status, frequency in conn.execute(query("system_status_frequencies")):
        found.setdefault(table, {})[status] = frequency
    return found


def _estimated(statuses: tuple[str, ...], live_rows: int, counted: Mapping[str, int],
               frequencies: Mapping[str, Mapping[str, float]], table: str, cap: int
               ) -> StatusCounts:
    """Counted statuses as counted; the rest of the live rows spread over the other
    statuses in proportion to their sampled frequencies (all to the first of them when
    the table was never analyzed)."""
    counts = dict.fromkeys(statuses, 0)
    counts.update(counted)
    rest = [status for status in statuses if status not in counted]
    remaining = max(0, live_rows - sum(counted.values()))
    shares = {status: frequencies.get(table, {}).get(status, 0.0) for status in rest}
    total_share = sum(shares.values())
    for status in rest:
        share = shares[status] / total_share if total_share else float(status == rest[0])
        counts[status] = round(remaining * share)
    return StatusCounts(counts, estimated=True)
