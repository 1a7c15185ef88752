"""The receiver's cheaper paths decide exactly as the slower ones they replaced: orjson with
the json module as the judge, pre-encoded answers, the webhook route outside Flask's
routing, and lz4 for the stored bodies; and a header the Stripe SDK chokes on is a clear
400."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inbox.errors import InvalidEvent, InvalidSignature
from inbox.providers import parse_json_object
from inbox.providers.stripe import StripeProvider, sign
from inbox.web.webhooks import DUPLICATE_BODY, STORED_BODY, error_body
from tests.support import TEST_SECRET, signed_headers, stripe_event_files

NOW = 1_724_900_000


def stdlib_verdict(body: bytes) -> object:
    """What the receiver accepted before orjson: the json module, no NaN or Infinity."""
    def reject(name: str) -> object:
        raise ValueError(name)

    try:
        value = json.loads(body.decode("utf-8"), parse_constant=reject)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "rejected"
    return value if isinstance(value, dict) else "rejected"


def our_verdict(body: bytes) -> object:
    try:
        return parse_json_object(body)[1]
    except InvalidEvent:
        return "rejected"


JSON_PIECES = st.sampled_from([
    '{', '}', '[', ']', ',', ':', '"id"', '"type"', '"evt_1"', '1', '-0', '1e999', '1.5',
    '12345678901234567890123', 'NaN', 'Infinity', 'true', 'null', '"\\u0000"', '"\\ud800"',
    '"\\ud83d\\ude00"', '"é"', ' ', '\n', '"a\tb"', '01', '.5',
])


@settings(max_examples=400, deadline=None)
@given(st.lists(JSON_PIECES, max_size=12).map("".join)
       | st.binary(max_size=40)
       | st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                      | st.text(max_size=8),
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3)).map(json.dumps))
def test_parse_accepts_exactly_what_the_json_module_accepts(document) -> None:
    body = document if isinstance(document, bytes) else document.encode("utf-8", "surrogatepass")
    ours, before = our_verdict(body), stdlib_verdict(body)
    assert (ours == "rejected") == (before == "rejected")
    if ours != "rejected":
        assert ours.get("id") == before.get("id") and ours.get("type") == before.get("type")


BODY = b'{"id": "evt_1", "type": "invoice.paid"}'


def test_a_non_ascii_v1_element_is_a_clear_400_not_a_crash() -> None:
    """The SDK's compare refuses a non-ASCII signature value (TypeError, which once made
    the receiver answer 500): it is a malformed header."""
    good = sign(BODY, TEST_SECRET, NOW).split(",")[1]
    provider = StripeProvider((TEST_SECRET,), 300, lambda: NOW)
    with pytest.raises(InvalidSignature, match="malformed"):
        provider.verify(BODY, f"t={NOW},v1=\u00e9,{good}")
    provider.verify(BODY, f"t={NOW},{good}")  # the same header without it passes


def test_the_pre_encoded_answers_are_what_jsonify_made(app) -> None:
    from flask import jsonify

    with app.app_context():
        assert jsonify(received=True, duplicate=False).get_data() == STORED_BODY
        assert jsonify(received=True, duplicate=True).get_data() == DUPLICATE_BODY


def test_error_answers_are_what_jsonify_made(app) -> None:
    from flask import jsonify

    with app.app_context():
        made = jsonify(error="Not Found", detail="caf\u00e9 \"quoted\"").get_data()
    assert error_body("Not Found", "caf\u00e9 \"quoted\"") == made


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD", "PATCH"])
def test_the_webhook_route_allows_only_post(client, method) -> None:
    answer = client.open("/webhooks/stripe", method=method)
    assert answer.status_code == 405 and answer.headers["Allow"] == "POST"
    if method != "HEAD":
        assert answer.get_json()["error"] == "Method Not Allowed"


@pytest.mark.parametrize("path", ["/webhooks/", "/webhooks/stripe/extra", "/webhooks",
                                  "/webhook/stripe", "/nothing"])
def test_paths_beside_the_webhook_route_are_flasks_json_404(client, clock, path) -> None:
    body = stripe_event_files()[0].read_bytes()
    answer = client.post(path, data=body, headers=signed_headers(body, int(clock.now)))
    assert answer.status_code == 404 and answer.get_json()["error"] == "Not Found"


def test_a_bug_in_the_route_is_a_json_500_that_stores_nothing(client, clock, db,
                                                              monkeypatch) -> None:
    def broken(self, body, headers):
        raise RuntimeError("a bug")

    monkeypatch.setattr(StripeProvider, "receive", broken)
    body = stripe_event_files()[0].read_bytes()
    headers = signed_headers(body, int(clock.now))
    answer = client.post("/webhooks/stripe", data=body, headers=headers)
    assert answer.status_code == 500 and answer.get_json()["error"] == "internal_error"
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0


def test_a_provider_name_is_read_as_utf8(client, clock, caplog) -> None:
    body = stripe_event_files()[0].read_bytes()
    with caplog.at_level("INFO", logger="inbox.web"):
        answer = client.post("/webhooks/str%C3%AFpe", data=body,
                             headers=signed_headers(body, int(clock.now)))
    assert answer.status_code == 404 and answer.get_json()["error"] == "unknown_provider"
    [line] = [dict(*r.msg.rows) for r in caplog.records if r.name == "inbox.web"]
    assert line["provider"] == "str\u00efpe" and line["status"] == 404


def test_answers_carry_the_json_content_type(client, clock) -> None:
    body = stripe_event_files()[0].read_bytes()
    headers = signed_headers(body, int(clock.now))
    answer = client.post("/webhooks/stripe", data=body, headers=headers)
    assert answer.status_code == 200 and answer.mimetype == "application/json"


def test_stored_bodies_are_compressed_with_lz4_where_the_server_has_it(client, clock, db) -> None:
    has_lz4 = db.execute("SELECT 'lz4' = ANY (enumvals) FROM pg_settings"
                         " WHERE name = 'default_toast_compression'").fetchone()[0]
    if not has_lz4:
        pytest.skip("this PostgreSQL was built without lz4 (the migration left pglz)")
    body = stripe_event_files()[0].read_bytes()
    padded = body[:-1].rstrip().rstrip(b"}") + b', "pad": "' + string.ascii_letters.encode() * 100
    padded += b'"}'
    assert client.post("/webhooks/stripe", data=padded,
                       headers=signed_headers(padded, int(clock.now))).status_code == 200
    methods = db.execute("SELECT pg_column_compression(payload), pg_column_compression(raw_body),"
                         " raw_body FROM inbox").fetchone()
    assert methods[:2] == ("lz4", "lz4")
    assert bytes(methods[2]) == padded
    columns = dict(db.execute(
        "SELECT attrelid::regclass::text || '.' || attname, attcompression FROM pg_attribute"
        " WHERE attrelid IN ('inbox'::regclass, 'outbox'::regclass)"
        " AND attname IN ('payload', 'raw_body')").fetchall())
    assert columns == {"inbox.payload": "l", "inbox.raw_body": "l", "outbox.payload": "l"}
