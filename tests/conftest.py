"""Real PostgreSQL for the tests: one throwaway cluster per session, migrated once into a
template database; each test gets its own database copied from that template."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

import psycopg
import pytest

from inbox.config import Settings
from inbox.migrations import migrate
from inbox.throwaway import Cluster
from inbox.web import create_app
from tests.support import TEST_SECRET
from tests.worker_support import EFFECTS_TABLE, WorkerProcesses, write_handlers

TEMPLATE = "inbox_template"
_counter = itertools.count()


def _throwaway_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    yield from _throwaway_cluster()


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster of the test's own, for a test that stops and restarts its database."""
    yield from _throwaway_cluster()


@pytest.fixture(scope="session")
def template_url(pg_cluster: Cluster) -> str:
    with psycopg.connect(pg_cluster.url(database="postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    url = pg_cluster.url(database=TEMPLATE)
    migrate(url)
    return url


@pytest.fixture
def database_url(pg_cluster: Cluster, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    name = f"test_{os.getpid()}_{next(_counter)}"
    admin = pg_cluster.url(database="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield pg_cluster.url(database=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's database, for arranging and asserting."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, stripe_webhook_secrets=(TEST_SECRET,))


class FrozenClock:
    """A clock the tests set; the receiver reads it instead of time.time()."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def app(settings: Settings, clock: FrozenClock):
    app = create_app(settings, clock=clock)
    yield app
    app.extensions["inbox.database"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def workers(database_url: str, tmp_path) -> Iterator[WorkerProcesses]:
    """`inbox worker` processes with the test handlers (tests/worker_support.py), all
    killed with their children at the end."""
    write_handlers(tmp_path)
    started = WorkerProcesses(database_url, tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


@pytest.fixture
def effects(db: psycopg.Connection) -> psycopg.Connection:
    """The test's database with the `effects` table the test handlers write to."""
    db.execute(EFFECTS_TABLE)
    return db
