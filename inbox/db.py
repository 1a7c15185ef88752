"""Connections to PostgreSQL: the one module that talks to psycopg directly.

A pool belongs to one process and is made after fork (gunicorn workers, worker
processes), never at import time. Connections are autocommit: a unit of work is
`with pool.connection() as conn, conn.transaction():`, and a single statement outside a
transaction block is its own transaction (one round trip instead of three).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row

from inbox.errors import DatabaseUnavailable

Connection = psycopg.Connection
CONNECT_TIMEOUT_SECONDS = 3

# Errors that mean "the database could not take this now", as opposed to a bug in our SQL.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    psycopg_pool.PoolClosed,
)
DataError = psycopg.DataError


def create_pool(
    url: str,
    *,
    max_size: int,
    min_size: int = 1,
    wait_seconds: float = 5.0,
    statement_timeout_seconds: float | None = None,
    application_name: str = "inbox",
    open_wait: bool = False,
) -> psycopg_pool.ConnectionPool:
    """A pool of autocommit connections, opened without waiting for the database.

    `open_wait=False` lets a web process start while the database is down; requests
    then fail fast with DatabaseUnavailable and the pool reconnects in the background.
    """
    options = ""
    if statement_timeout_seconds:
        options = f"-c statement_timeout={int(statement_timeout_seconds * 1000)}"
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": application_name,
    }
    if options:
        kwargs["options"] = options
    pool = psycopg_pool.ConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=wait_seconds,
        open=False,
        check=psycopg_pool.ConnectionPool.check_connection,
        kwargs=kwargs,
        reconnect_timeout=0,  # keep trying to reconnect for ever: the database will be back
        name=application_name,
    )
    pool.open(wait=open_wait, timeout=wait_seconds)
    return pool


@contextmanager
def connection(pool: psycopg_pool.ConnectionPool) -> Iterator[psycopg.Connection]:
    """A pooled connection; database outages surface as DatabaseUnavailable."""
    try:
        with pool.connection() as conn:
            yield conn
    except UNAVAILABLE_ERRORS as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc


def connect(url: str, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection:
    """A single connection outside any pool (CLI commands, LISTEN, migrations)."""
    try:
        return psycopg.connect(
            url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS, **kwargs
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc


def dict_cursor(conn: psycopg.Connection) -> psycopg.Cursor[dict[str, Any]]:
    """A cursor whose rows are dicts keyed by column name."""
    return conn.cursor(row_factory=dict_row)
