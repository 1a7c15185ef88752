"""Apply sql/migrations/NNNN_*.sql in order, each once, each in its own transaction; then
the handler packages' own migrations; and, for `inbox dev` only, their seeds (`seed`).

Runs under a session advisory lock, so two `inbox migrate` started together (two release
phases, a test and a dyno) are safe: the second waits, then finds nothing left to do.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
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


def seed(database_url: str, handler_modules: Sequence[str] = ()) -> list[str]:
    """Apply the handler packages' development seeds; return the names applied.

    `<package>/seeds/NNNN_*.sql` (next to `migrations/`) is demo data for `inbox dev`, such
    as the customer of the fixture story. Only `inbox dev` calls this: `inbox migrate` (the
    release phase) never does, so a production deploy gets no demo rows. Every file runs at
    every call, in name order, each in its own transaction, and nothing is recorded: a seed
    must be idempotent (`INSERT ... ON CONFLICT DO NOTHING`), and a development database
    that lost its demo rows gets them back at the next start.
    """
    from inbox.worker.registry import seeds_folder

    applied: list[str] = []
    with db.connect(database_url) as conn:
        conn.execute(query("migrations_lock"))  # not while a migration runs
        try:
            for owner, folder in _handler_folders(handler_modules, seeds_folder):
                for path in _sql_files(folder):
                    with conn.transaction():
                        conn.execute(path.read_text(encoding="utf-8"))
                    log.info("applied seed %s/%s/%s", owner, folder.name, path.name)
                    applied.append(f"{owner}/{folder.name}/{path.name}")
        finally:
            conn.execute(query("migrations_unlock"))
    return applied


def _handler_folders(
    modules: Sequence[str], finder: Callable[[str], tuple[str, Path] | None]
) -> Iterator[tuple[str, Path]]:
    """(owner, folder) of each handler module's folder that `finder` finds, once each."""
    seen: set[Path] = set()
    for module in modules:
        found = finder(module)
        if found is not None and found[1] not in seen:
            seen.add(found[1])
            yield found


def _sql_files(folder: Path) -> list[Path]:
    """The NNNN_*.sql files of a folder, in name order."""
    return [path for path in sorted(folder.iterdir())
            if re.fullmatch(r"\d{4}_\w+\.sql", path.name)]


def _migrate_handler_packages(conn: db.Connection, modules: Sequence[str]) -> list[str]:
    """Apply each handler package's migrations/NNNN_*.sql once, in name order."""
    from inbox.worker.registry import migrations_folder

    applied_now: list[str] = []
    for owner, folder in _handler_folders(modules, migrations_folder):
        done = {row[0] for row in conn.execute(query("app_migrations_applied"), {"module": owner})}
        for path in _sql_files(folder):
            if path.name in done:
                continue
            with conn.transaction():
                conn.execute(path.read_text(encoding="utf-8"))
                conn.execute(query("app_migrations_record"), {"module": owner, "name": path.name})
            log.info("applied migration %s/%s", owner, path.name)
            applied_now.append(f"{owner}/{path.name}")
    return applied_now
