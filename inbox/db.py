"""Connections to PostgreSQL: the one module that talks to psycopg directly.

A pool belongs to one process and is made after fork (gunicorn workers, worker
processes), never at import time. Connections are autocommit: a unit of work is
`with pool.connection() as conn, conn.transaction():`, and a single statement outside a
transaction block is its own transaction (one round trip instead of three).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import orjson
import psycopg
import psycopg.types.json
import psycopg_pool
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.rows import dict_row

from inbox.errors import DatabaseUnavailable

Connection = psycopg.Connection
T = TypeVar("T")
log = logging.getLogger(__name__)
CONNECT_TIMEOUT_SECONDS = 3

# Errors that mean "the database could not take this now", as opposed to a bug in our SQL.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    psycopg_pool.PoolClosed,
)
DataError = psycopg.DataError
# A statement ended by its statement_timeout (a time budget the caller chose).
QueryCanceled = psycopg.errors.QueryCanceled
# Our role may not do this (e.g. end another role's backend).
InsufficientPrivilege = psycopg.errors.InsufficientPrivilege


class _InfinityLoader(Loader):
    """Loads PostgreSQL's ±infinity as the largest/smallest Python value of the type.

    A leased row's next_attempt_at is 'infinity', which psycopg's own loaders refuse
    (DataError). Every other value goes to the loader psycopg had for the type (the fast C
    one with psycopg[binary]), so ordinary timestamps cost no more than before. A value read
    as datetime.max is not written back as 'infinity' (no dumper): our SQL sets it itself.
    """

    default: type[Loader]
    infinity: bytes
    minus_infinity: bytes
    high: Any
    low: Any

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self._load = self.default(oid, context).load

    def load(self, data: Any) -> Any:
        if data == self.infinity:
            return self.high
        if data == self.minus_infinity:
            return self.low
        return self._load(data)


def _register_infinity_loaders(adapters: psycopg.adapt.AdaptersMap) -> None:
    """Register, on every connection made after it, loaders for ±infinity of timestamptz,
    timestamp and date, in text and binary format."""
    int8, int4 = (2**63 - 1).to_bytes(8, "big"), (2**31 - 1).to_bytes(4, "big")
    bounds = {  # type: (largest, smallest, binary infinity, binary -infinity)
        "timestamptz": (datetime.max.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC),
                        int8, (-(2**63)).to_bytes(8, "big", signed=True)),
        "timestamp": (datetime.max, datetime.min,
                      int8, (-(2**63)).to_bytes(8, "big", signed=True)),
        "date": (date.max, date.min, int4, (-(2**31)).to_bytes(4, "big", signed=True)),
    }
    for name, (high, low, binary_inf, binary_minus_inf) in bounds.items():
        oid = adapters.types[name].oid
        for fmt, inf, minus_inf in ((Format.TEXT, b"infinity", b"-infinity"),
                                    (Format.BINARY, binary_inf, binary_minus_inf)):
            default = adapters.get_loader(oid, fmt)
            if default is None or issubclass(default, _InfinityLoader):
                continue  # registered already
            loader = type(f"Infinity{default.__name__}", (_InfinityLoader,), {
                "format": fmt, "default": default, "infinity": inf,
                "minus_infinity": minus_inf, "high": high, "low": low,
            })
            adapters.register_loader(oid, loader)


_register_infinity_loaders(psycopg.adapters)


# 19 digits in a row: maybe an integer orjson would turn into a float (it keeps exact
# integers only up to 64 bits, and silently rounds longer ones). Found by turning every
# digit into "0" (bytes.translate, in C) and looking for 19 of them: a regex took ~40 us
# on a 3 KB payload, this ~2 us.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def load_json(data: bytes | memoryview | str) -> Any:
    """json/jsonb values as Python objects, exactly, with orjson where that is safe.

    A worker parses every event's payload (~3 KB): the standard library took ~40 us of the
    ~150 us of Python per event, orjson ~8 us. But orjson rounds integers past 64 bits to
    floats, which JSON and jsonb allow: a document with a run of 19+ digits anywhere goes
    through the standard library instead (ids and amounts are far shorter; the check is a
    few microseconds), and so does anything orjson refuses (1e400).
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


psycopg.types.json.set_json_loads(load_json)


def create_pool(
    url: str,
    *,
    max_size: int,
    min_size: int = 1,
    wait_seconds: float = 5.0,
    statement_timeout_seconds: float | None = None,
    application_name: str = "inbox",
    open_wait: bool = False,
    check: bool = True,
) -> psycopg_pool.ConnectionPool:
    """A pool of autocommit connections, opened without waiting for the database.

    `open_wait=False` lets a web process start while the database is down; requests
    then fail fast with DatabaseUnavailable and the pool reconnects in the background.
    `check=False` skips the pool's liveness round trip on every checkout; callers then
    meet a broken connection as an error and use `run_idempotent` to retry once.
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
        check=psycopg_pool.ConnectionPool.check_connection if check else None,
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


def run_idempotent(pool: psycopg_pool.ConnectionPool, work: Callable[[Connection], T]) -> T:
    """Run `work` on a pooled connection; if that connection turns out to be broken (the
    database restarted since it was opened), run it once more on a fresh one.

    Only for work that is safe to run twice: the first run may have committed before the
    connection broke. Outages still surface as DatabaseUnavailable.
    """
    try:
        with pool.connection() as conn:
            return work(conn)
    except (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
    except psycopg.OperationalError as first:
        log.info("retrying on a fresh connection after: %s", first)
    with connection(pool) as conn:
        return work(conn)


def forget_prepared_statements(conn: psycopg.Connection) -> None:
    """Deallocate the statements psycopg prepared on `conn` (it sends DEALLOCATE ALL before
    the next statement): they are prepared again, with plans for the tables as they are
    then. Through psycopg's own cache: a DEALLOCATE ALL we sent ourselves is noticed only
    the first time its text is run, and psycopg then used statements that were gone."""
    conn._prepared.clear()


def in_transaction(conn: psycopg.Connection) -> bool:
    """True inside an open, healthy transaction block (not between statements of an
    autocommit connection)."""
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


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
