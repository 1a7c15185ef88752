"""The database goes away under a running receiver: 503, never a 2xx, then recovery."""

from __future__ import annotations

import time

from inbox.config import Settings
from inbox.migrations import migrate
from inbox.web import create_app
from tests.support import TEST_SECRET, signed_headers, stripe_event_files

RECOVERY_DEADLINE_SECONDS = 30


def test_database_down_answers_503_then_recovers_without_restart(own_cluster):
    url = own_cluster.url()
    migrate(url)
    settings = Settings(database_url=url, stripe_webhook_secrets=(TEST_SECRET,),
                        db_wait_seconds=1.0)
    app = create_app(settings)
    client = app.test_client()
    first, second = (path.read_bytes() for path in stripe_event_files()[:2])

    def post(body: bytes):
        return client.post("/webhooks/stripe", data=body,
                           headers=signed_headers(body, int(time.time())))

    try:
        assert post(first).status_code == 200

        own_cluster.terminate()  # stop the server; the app keeps its (now broken) pool
        started = time.monotonic()
        down = post(second)
        assert down.status_code == 503
        assert int(down.headers["Retry-After"]) > 0
        assert time.monotonic() - started < 10, "a request must not hang on a dead database"
        assert client.get("/readyz").status_code == 503

        own_cluster.start()
        deadline = time.monotonic() + RECOVERY_DEADLINE_SECONDS
        while (answer := post(second)).status_code != 200:
            assert answer.status_code == 503
            assert time.monotonic() < deadline, "the receiver did not recover"
            time.sleep(0.2)
        assert answer.get_json() == {"received": True, "duplicate": False}
    finally:
        app.extensions["inbox.database"].close()

    import psycopg

    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 2


def test_a_database_restart_between_requests_costs_no_503(own_cluster):
    """The pool does not check connections on checkout (a round trip per request): a
    connection broken by a restart is met by the insert, which is retried once."""
    url = own_cluster.url()
    migrate(url)
    settings = Settings(database_url=url, stripe_webhook_secrets=(TEST_SECRET,),
                        db_wait_seconds=5.0)
    app = create_app(settings, pool_size=1)
    client = app.test_client()
    first, second = (path.read_bytes() for path in stripe_event_files()[:2])
    try:
        answer = client.post("/webhooks/stripe", data=first,
                             headers=signed_headers(first, int(time.time())))
        assert answer.status_code == 200
        own_cluster.terminate()
        own_cluster.start()
        answer = client.post("/webhooks/stripe", data=second,
                             headers=signed_headers(second, int(time.time())))
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json() == {"received": True, "duplicate": False}
    finally:
        app.extensions["inbox.database"].close()
