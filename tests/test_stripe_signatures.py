"""All 32 Stripe-Signature cases of tests/fixtures/signatures, through the HTTP endpoint."""

from __future__ import annotations

import pytest

from inbox.config import Settings
from inbox.web import create_app
from tests.support import signature_cases

CASES = signature_cases("stripe_cases.json")["cases"]


def test_the_fixture_has_all_32_cases() -> None:
    assert len(CASES) == 32


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_signature_case(case, database_url, db) -> None:
    secrets = (case["secret"], *case.get("additional_secrets", []))
    settings = Settings(
        database_url=database_url,
        stripe_webhook_secrets=secrets,
        stripe_webhook_tolerance_seconds=case["tolerance"],
    )
    app = create_app(settings, clock=lambda: case["now"])
    headers = {} if case["header"] is None else {"Stripe-Signature": case["header"]}
    try:
        response = app.test_client().post(
            "/webhooks/stripe", data=case["payload"].encode("utf-8"), headers=headers
        )
    finally:
        app.extensions["inbox.database"].close()

    stored = db.execute("SELECT count(*) FROM inbox").fetchone()[0]
    if case["expect"] == "valid":
        assert response.status_code == 200, response.get_json()
        assert response.get_json() == {"received": True, "duplicate": False}
        assert stored == 1
        raw = db.execute("SELECT raw_body FROM inbox").fetchone()[0]
        assert bytes(raw) == case["payload"].encode("utf-8")
    else:
        assert response.status_code == 400, response.get_json()
        assert stored == 0
