"""Apply sql/migrations/NNNN_*.sql in order, each once, each in its own transaction.

Runs under a session advisory lock, so two `inbox migrate` started together (two release
phases, a test and a dyno) are safe: the second waits, then finds nothing left to do.
"""

from __future__ import annotations

import logging

from inbox import db
from inbox.queries import migration_files, query

log = logging.getLogger(__name__)


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; return the file names applied by this call."""
    applied_now: list[str] = []
    with db.connect(database_url) as conn:
        conn.execute(query("migrations_lock"))
        try:
            conn.execute(query("migrations_create_table"))
            done = {row[0] for row in conn.execute(query("migrations_applied"))}
            for version, name, sql in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute(query("migrations_record"), {"version": version, "name": name})
                log.info("applied migration %s", name)
                applied_now.append(name)
        finally:
            conn.execute(query("migrations_unlock"))
    return applied_now


def pending(conn: db.Connection) -> list[str]:
    """Migration files not yet applied on this connection's database."""
    exists = conn.execute(query("migrations_table_exists")).fetchone()
    done: set[int] = set()
    if exists and exists[0]:
        done = {row[0] for row in conn.execute(query("migrations_applied"))}
    return [name for version, name, _ in migration_files() if version not in done]
