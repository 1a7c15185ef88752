"""Thousands of malformed headers and bodies: every answer a 4xx, nothing stored."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inbox.providers.stripe import sign
from tests.support import TEST_SECRET

HEADER_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200
)
HEX = st.text(alphabet="0123456789abcdefABCDEF", max_size=70)
NEAR_VALID_HEADER = st.builds(
    lambda t, v1, extra: f"t={t},v1={v1}{extra}",
    st.one_of(st.integers(-10**12, 10**12).map(str), HEADER_TEXT),
    HEX,
    st.sampled_from(["", ",t=1", ",v0=abc", ", v1=00", ",t="]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def not_an_event(value) -> bool:
    return not (
        isinstance(value, dict)
        and isinstance(value.get("id"), str) and value["id"]
        and isinstance(value.get("type"), str) and value["type"]
    )


BODIES = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=200).map(str.encode),
    JSON_VALUES.filter(not_an_event).map(lambda v: json.dumps(v).encode()),
)


FUZZ = settings(max_examples=1500, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(header=st.one_of(st.none(), HEADER_TEXT, NEAR_VALID_HEADER), body=BODIES)
def test_garbage_signatures_are_rejected(client, db, header, body):
    headers = {} if header is None else {"Stripe-Signature": header}
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert 400 <= response.status_code < 500, response.get_data()
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0


@FUZZ
@given(body=BODIES)
def test_correctly_signed_bodies_that_are_not_events_are_rejected(client, clock, db, body):
    headers = {"Stripe-Signature": sign(body, TEST_SECRET, int(clock.now))}
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert 400 <= response.status_code < 500, response.get_data()
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0
