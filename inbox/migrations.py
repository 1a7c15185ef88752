"""Apply sql/migrations/NNNN_*.sql in order, each once, each in its own transaction.

Runs under a session advisory lock, so two `inbox migrate` started together (two release
phases, a test and a dyno) are safe: the second waits, then finds nothing left to do.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from inbox import db
from inbox.queries import migration_files, query

log = logging.getLogger(__name__)


def migrate(database_url: str, handler_modules: Sequence[str] = ()) -> list[str]:
    """Apply pending migrations; return the file names applied by this call.

    After the product's own, the migrations of the handler modules' packages (INBOX_HANDLERS:
    `<package>/migrations/NNNN_*.sql`), recorded in inbox_app_migrations as `package/file`.
    """
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
            applied_now += _migrate_handler_packages(conn, handler_modules)
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


def _migrate_handler_packages(conn: db.Connection, modules: Sequence[str]) -> list[str]:
    """Apply each handler package's migrations/NNNN_*.sql once, in name order."""
    from inbox.registry import migrations_folder

    applied_now: list[str] = []
    seen: set[Path] = set()
    for module in modules:
        found = migrations_folder(module)
        if found is None:
            continue
        owner, folder = found
        if folder in seen:
            continue
        seen.add(folder)
        done = {row[0] for row in conn.execute(query("app_migrations_applied"), {"module": owner})}
        for path in sorted(folder.iterdir()):
            if not re.fullmatch(r"\d{4}_\w+\.sql", path.name) or path.name in done:
                continue
            with conn.transaction():
                conn.execute(path.read_text(encoding="utf-8"))
                conn.execute(query("app_migrations_record"), {"module": owner, "name": path.name})
            log.info("applied migration %s/%s", owner, path.name)
            applied_now.append(f"{owner}/{path.name}")
    return applied_now
