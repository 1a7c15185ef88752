"""STRIPE_WEBHOOK_IP_ALLOWLIST against the real web app over real HTTP: deliveries from
Stripe's addresses are stored, others answered 403 and stored nowhere, whatever
X-Forwarded-For a client writes; and `inbox stripe-ips --update` reaches running web
processes.

The loopback network is 127.0.0.0/8, so a test client can connect from 127.0.0.2 or
127.0.0.3 and the server sees that peer: the tests store a list holding 127.0.0.2 and play
the other address as the outsider. Behind a router (gunicorn as the Procfile runs it, with
a small proxy in front that appends the peer to X-Forwarded-For as Heroku's router does),
INBOX_TRUSTED_PROXY_HOPS=1.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inbox.cli.dev import procfile_commands
from inbox.cli.send_test_event import fresh_event, new_event_id
from inbox.fixtures import stripe_event_bytes
from inbox.logs import Lines
from inbox.metrics import web as web_metrics
from inbox.stripe import ips
from inbox.web import create_app
from inbox.web.allowlist import StripeAllowlist
from tests.cli_support import cli_env, inbox
from tests.support import REPO, TEST_SECRET, free_port, serve_wsgi, signed_headers, wait_for
from tests.test_procfile_web import wait_until_healthy

STRIPE = "127.0.0.2"  # on the stored list in these tests
OUTSIDER = "127.0.0.3"
METRICS_TOKEN = "allowlist-test-token"


def signed_event() -> tuple[str, bytes, dict[str, str]]:
    """A fresh signed Stripe delivery: its event id, body and headers."""
    event_id = new_event_id()
    body = fresh_event(stripe_event_bytes("invoice.paid"), event_id=event_id,
                       created=int(time.time()))
    return event_id, body, signed_headers(body, int(time.time()))


def post(base: str, source: str, *, forwarded: str | None = None,
         path: str = "/webhooks/stripe", body: bytes | None = None
         ) -> tuple[int, dict, str]:
    """POST a signed delivery from the loopback address `source`; the status, the answer
    and the event id."""
    event_id, event_body, headers = signed_event()
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30,
                                      source_address=(source, 0))
    try:
        conn.request("POST", path, body=event_body if body is None else body, headers=headers)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"{}"), event_id
    finally:
        conn.close()


def stored(db, event_id: str) -> bool:
    return db.execute("SELECT 1 FROM inbox WHERE event_id = %s", [event_id]).fetchone() is not None


def forbidden_count(provider: str = "stripe") -> float:
    return web_metrics.REGISTRY.get_sample_value(
        "inbox_webhook_requests_total", {"provider": provider, "outcome": "forbidden"}) or 0.0


@contextmanager
def allowlisted_app(settings, *, read_list: bool = True) -> Iterator[tuple[str, object]]:
    """The app with the allowlist on, served on a real HTTP server, having read the list
    stored in the database as its duties thread does (unless `read_list` is False)."""
    app = create_app(dataclasses.replace(settings, stripe_webhook_ip_allowlist=True))
    try:
        if read_list:
            app.extensions["inbox.duties"].run_once()  # the duty that reads the list
        with serve_wsgi(app) as base:
            yield base, app
    finally:
        app.extensions["inbox.database"].close()


def test_deliveries_from_stripe_are_stored_others_refused_and_stored_nowhere(
        settings, db, caplog):
    ips.store(db, (STRIPE,), "test list")
    before = forbidden_count()
    with allowlisted_app(settings) as (base, _), caplog.at_level(logging.INFO, "inbox.web"):
        status, answer, allowed_id = post(base, STRIPE)
        assert (status, answer) == (200, {"duplicate": False, "received": True})
        # No proxy hops: the peer decides; a header naming a Stripe address changes nothing.
        status, answer, outside_id = post(base, OUTSIDER, forwarded=STRIPE)
        assert status == 403 and answer["error"] == "forbidden"
        status, _, connect_id = post(base, OUTSIDER, path="/webhooks/stripe-connect")
        assert status == 403
        # Other providers are not Stripe's: the list does not apply (400: no secret set).
        assert post(base, OUTSIDER, path="/webhooks/github")[0] == 400
        # A Stripe address with a header naming someone else is still Stripe.
        status, _, forwarded_id = post(base, STRIPE, forwarded="198.51.100.7")
        assert status == 200
    assert stored(db, allowed_id) and stored(db, forwarded_id)
    assert not stored(db, outside_id) and not stored(db, connect_id)
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 2
    assert forbidden_count() - before == 1 and forbidden_count("stripe-connect") >= 1
    refused = [row for record in caplog.records if isinstance(record.msg, Lines)
               for row in record.msg.rows if row.get("outcome") == "forbidden"]
    assert [(row["provider"], row["client"], row["status"]) for row in refused] == [
        ("stripe", OUTSIDER, 403), ("stripe-connect", OUTSIDER, 403)]
    assert "v1=" not in caplog.text and TEST_SECRET not in caplog.text


def test_the_check_comes_before_the_body_and_the_database(settings):
    """With the database unreachable, an outsider still gets 403 (not 503), and a body over
    the limit is not read (403, not 413)."""
    down = dataclasses.replace(settings, database_url="postgresql://u@127.0.0.1:1/x",
                               db_wait_seconds=0.2)
    with allowlisted_app(down, read_list=False) as (base, _):
        assert post(base, OUTSIDER)[0] == 403
        assert post(base, OUTSIDER, body=b"x" * (2 * 1024 * 1024))[0] == 403


def test_off_by_default(client, db):
    """Without STRIPE_WEBHOOK_IP_ALLOWLIST, any address may deliver (the signature decides)."""
    event_id, body, headers = signed_event()
    response = client.post("/webhooks/stripe", data=body, headers=headers,
                           environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert response.status_code == 200 and stored(db, event_id)


def test_other_spellings_of_a_listed_address_are_that_address():
    listed = dataclasses.replace(ips.shipped(), addresses=("3.18.12.63", "2600:1f18::1"))
    allowlist = StripeAllowlist(0, listed)
    for client in ("3.18.12.63", "::ffff:3.18.12.63", "2600:1F18:0::1"):
        assert allowlist.refused({"REMOTE_ADDR": client}) is None, client
    for client in ("3.18.12.063", "3.18.12.64", "2600:1f18::2", "garbage", ""):
        assert allowlist.refused({"REMOTE_ADDR": client}) == (client or "-"), client


def router(upstream_port: int):
    """Heroku's router in miniature, as a WSGI app: forwards each request to the web
    process and appends the address it saw to X-Forwarded-For, after any the client sent
    (several such headers arrive joined by commas)."""

    def forward(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        headers = {key[5:].replace("_", "-").title(): value for key, value in environ.items()
                   if key.startswith("HTTP_") and key not in HOP_HEADERS}
        headers["Content-Type"] = environ.get("CONTENT_TYPE", "")
        sent = environ.get("HTTP_X_FORWARDED_FOR")
        headers["X-Forwarded-For"] = ", ".join([*([sent] if sent else []), environ["REMOTE_ADDR"]])
        upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
        try:
            upstream.request(environ["REQUEST_METHOD"], environ["PATH_INFO"], body=body,
                             headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        start_response(f"{answer.status} {answer.reason}",
                       [("Content-Type", answer.getheader("Content-Type", "text/plain"))])
        return [data]

    return serve_wsgi(forward)


HOP_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_CONNECTION", "HTTP_HOST")


def write_list(path: Path, *addresses: str) -> Path:
    path.write_text(json.dumps({"WEBHOOKS": list(addresses)}))
    return path


def scrape_forbidden(base: str) -> float:
    conn = http.client.HTTPConnection(base.removeprefix("http://").split(":")[0],
                                      int(base.rsplit(":", 1)[1]), timeout=30)
    conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}",
                                             "X-Forwarded-For": "127.0.0.1"})
    text = conn.getresponse().read().decode()
    conn.close()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "inbox_webhook_requests_total" and sample.labels == {
                    "provider": "stripe", "outcome": "forbidden"}:
                return sample.value
    return 0.0


def lists_taken(log: Path, count: int) -> int:
    """How many web processes logged taking a list of `count` addresses."""
    return log.read_text(errors="replace").count(f"Stripe webhook addresses: {count}, ")


@pytest.mark.slow
def test_gunicorn_behind_a_router_with_forged_and_real_chains(database_url, db, tmp_path):
    env = cli_env(tmp_path / "dev", DATABASE_URL=database_url)
    published = [*ips.shipped().addresses, STRIPE]
    updated = inbox("stripe-ips", "--update", str(write_list(tmp_path / "a.json", *published)),
                    env=env)
    assert updated.returncode == 0, updated.stderr
    port = free_port()
    web_env = {**env, "PORT": str(port), "STRIPE_WEBHOOK_SECRET": TEST_SECRET,
               "STRIPE_WEBHOOK_IP_ALLOWLIST": "1", "INBOX_TRUSTED_PROXY_HOPS": "1",
               "WEB_CONCURRENCY": "2", "INBOX_POLL_INTERVAL_SECONDS": "0.2",
               "INBOX_METRICS_TOKEN": METRICS_TOKEN, "INBOX_LOG_METRICS_SECONDS": "0",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        web = subprocess.Popen(["bash", "-c", procfile_commands(REPO / "Procfile")["web"]],
                               cwd=REPO, env=web_env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    direct = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(direct, web)
        wait_for(lambda: lists_taken(log, len(published)) == 2, "both processes to read the list")
        with router(port) as base:
            # The real chain: the router appends the peer, 127.0.0.2, which is on the list.
            ok, _, first = post(base, STRIPE)
            # A forged chain: the outsider writes a listed address; the router appends its
            # real one, and only that one is trusted.
            forged, answer, forged_id = post(base, OUTSIDER, forwarded=f"{STRIPE}, 3.18.12.63")
            # A listed client whose own header says something else is still itself.
            chained, _, chained_id = post(base, STRIPE, forwarded="203.0.113.5")
            # Around the router (no entry it appended): nobody can say who it is.
            bypass, _, bypass_id = post(direct, STRIPE)
            assert (ok, forged, chained, bypass) == (200, 403, 200, 403)
            assert answer["error"] == "forbidden"
            assert stored(db, first) and stored(db, chained_id)
            assert not stored(db, forged_id) and not stored(db, bypass_id)

            # A new list reaches the running processes within their refresh, no restart.
            moved = inbox("stripe-ips", "--update",
                          str(write_list(tmp_path / "b.json", OUTSIDER)), env=env)
            assert moved.returncode == 0, moved.stderr
            wait_for(lambda: lists_taken(log, 1) == 2, "both processes to take the new list")
            now_in, _, now_in_id = post(base, OUTSIDER)
            now_out, _, now_out_id = post(base, STRIPE)
            assert (now_in, now_out) == (200, 403)
            assert stored(db, now_in_id) and not stored(db, now_out_id)

            # A bad file changes nothing, for the database or the processes.
            bad = inbox("stripe-ips", "--update",
                        str(write_list(tmp_path / "c.json", STRIPE, "999.1.1.1")), env=env)
            assert bad.returncode == 1 and "nothing changed" in bad.stderr
            assert ips.read_stored(db).addresses == (OUTSIDER,)
            assert post(base, OUTSIDER)[0] == 200 and post(base, STRIPE)[0] == 403
            assert scrape_forbidden(base) == 4  # forged, bypass, 127.0.0.2 twice
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert web.returncode == 0, output
    assert output.count("outcome=forbidden") == 4, output
    assert f"provider=stripe client={OUTSIDER} outcome=forbidden status=403" in output
    assert "provider=stripe client=- outcome=forbidden status=403" in output
    assert "Traceback" not in output and "v1=" not in output and TEST_SECRET not in output
