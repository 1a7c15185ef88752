"""GitHub, Shopify and Standard Webhooks: all 38 generic signature cases of
tests/fixtures/signatures through the HTTP endpoint, plus the naming rules of each provider."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from inbox.config import Settings
from inbox.errors import InvalidEvent, InvalidSignature, UnknownProvider
from inbox.providers import UNTYPED, body_digest_id, get_provider, github, shopify
from inbox.providers import standard_webhooks as sw
from inbox.web import create_app
from tests.support import signature_cases

CASES = signature_cases("generic_cases.json")["cases"]
# Policy: GitHub's docs vector signs "Hello, World!" correctly, but that body is not a JSON
# object, so it is not an event (payload is jsonb, handlers get a dict): 400, like any
# other body that is not an event. Its signature is checked as valid below all the same.
NOT_AN_EVENT = {"github_docs_test_vector"}
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _settings(
    provider: str, secrets: tuple[str, ...], database_url: str | None = None, **extra: Any
) -> Settings:
    return Settings(database_url=database_url, provider_secrets={provider: secrets}, **extra)


def _case_settings(case: dict[str, Any], database_url: str | None = None) -> Settings:
    extra = {}
    if case["tolerance"] is not None:
        extra["standard_webhooks_tolerance_seconds"] = case["tolerance"]
    return _settings(case["provider"], (case["secret"],), database_url, **extra)


def _post(
    settings: Settings,
    provider: str,
    body: bytes,
    headers: dict[str, str],
    now: float | None = None,
    times: int = 1,
) -> list[Any]:
    """POST the same delivery `times` times to a fresh receiver; the responses."""
    app = create_app(settings, clock=time.time if now is None else lambda: now)
    try:
        client = app.test_client()
        return [
            client.post(f"/webhooks/{provider}", data=body, headers=headers) for _ in range(times)
        ]
    finally:
        app.extensions["inbox.database"].close()


def _expected_identity(case: dict[str, Any]) -> tuple[str, str]:
    """(event_id, event_type) a valid case is stored under: see each provider's docstring."""
    body = case["payload"].encode("utf-8")
    if case["provider"] == "standard-webhooks":
        headers = {name.lower(): value for name, value in case["headers"].items()}
        return headers["webhook-id"], json.loads(body).get("type", UNTYPED)
    return body_digest_id(body), UNTYPED  # these vectors carry no id or event header


def test_the_fixture_has_all_38_cases() -> None:
    assert Counter(case["provider"] for case in CASES) == {
        "github": 12,
        "shopify": 8,
        "standard-webhooks": 18,
    }
    assert {case["name"] for case in CASES} >= NOT_AN_EVENT


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_generic_case_over_http(case, database_url, db) -> None:
    body = case["payload"].encode("utf-8")
    valid = case["expect"] == "valid" and case["name"] not in NOT_AN_EVENT
    first, again = _post(
        _case_settings(case, database_url),
        case["provider"],
        body,
        case["headers"],
        now=case["now"],
        times=2,
    )

    rows = db.execute("SELECT provider, event_id, event_type, raw_body FROM inbox").fetchall()
    if valid:
        assert first.status_code == 200, first.get_json()
        assert first.get_json() == {"received": True, "duplicate": False}
        assert again.status_code == 200, again.get_json()
        assert again.get_json() == {"received": True, "duplicate": True}
        assert len(rows) == 1
        provider, event_id, event_type, raw = rows[0]
        assert provider == case["provider"]
        assert (event_id, event_type) == _expected_identity(case)
        assert bytes(raw) == body
    else:
        assert first.status_code == 400, first.get_json()
        assert again.status_code == 400
        assert rows == []
        if case["name"] in NOT_AN_EVENT:
            assert first.get_json()["error"] == "InvalidEvent"


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_generic_case_signature_with_plain_dict_headers(case) -> None:
    """The providers alone, no database: headers as a plain dict in the fixture's case."""
    provider = get_provider(case["provider"], _case_settings(case), lambda: case["now"])
    body = case["payload"].encode("utf-8")
    if case["name"] in NOT_AN_EVENT:
        provider.verify(body, case["headers"]["X-Hub-Signature-256"])  # the MAC is right
        with pytest.raises(InvalidEvent):
            provider.receive(body, case["headers"])
    elif case["expect"] == "valid":
        assert provider.receive(body, case["headers"]).raw_body == body
    else:
        with pytest.raises(InvalidSignature):
            provider.receive(body, case["headers"])


# --- GitHub ------------------------------------------------------------------------------


def test_github_delivery_and_event_headers_name_the_event() -> None:
    provider = github.GitHubProvider(("s3cret",))
    body = b'{"action": "opened", "issue": {"number": 1}}'
    event = provider.receive(
        body,
        {
            "X-Hub-Signature-256": github.sign(body, "s3cret"),
            "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "X-GitHub-Event": "issues",
        },
    )
    assert (event.event_id, event.event_type) == (
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "issues.opened",
    )
    push = b'{"ref": "refs/heads/main"}'
    event = provider.receive(
        push,
        {
            "x-hub-signature-256": github.sign(push, "s3cret"),
            "x-github-delivery": "d1",
            "x-github-event": "push",
        },
    )
    assert (event.event_id, event.event_type) == ("d1", "push")


def test_github_accepts_any_configured_secret_for_rotation() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    provider = github.GitHubProvider(("new", "old"))
    provider.receive(body, {"X-Hub-Signature-256": github.sign(body, "old")})
    with pytest.raises(InvalidSignature):
        provider.receive(body, {"X-Hub-Signature-256": github.sign(body, "other")})


def test_github_body_that_is_not_a_json_object_is_400() -> None:
    provider = github.GitHubProvider(("s3cret",))
    for body in (b"[1, 2]", b"payload=%7B%7D", b"\xff\xfe"):
        with pytest.raises(InvalidEvent):
            provider.receive(body, {"X-Hub-Signature-256": github.sign(body, "s3cret")})


# --- Shopify -----------------------------------------------------------------------------


def test_shopify_prefers_the_webhook_id_then_the_event_id() -> None:
    provider = shopify.ShopifyProvider(("shpss_x",))
    body = b'{"id": 820982911946154508}'
    signed = {"X-Shopify-Hmac-Sha256": shopify.sign(body, "shpss_x")}
    both = provider.receive(
        body,
        {
            **signed,
            "X-Shopify-Webhook-Id": "wh-1",
            "X-Shopify-Event-Id": "ev-1",
            "X-Shopify-Topic": "orders/create",
        },
    )
    assert (both.event_id, both.event_type) == ("wh-1", "orders/create")
    event_only = provider.receive(body, {**signed, "x-shopify-event-id": "ev-1"})
    assert (event_only.event_id, event_only.event_type) == ("ev-1", UNTYPED)


def test_a_delivery_without_an_id_gets_a_stable_digest_id() -> None:
    provider = shopify.ShopifyProvider(("shpss_x",))
    body = b'{"id": 1}'
    headers = {"X-Shopify-Hmac-Sha256": shopify.sign(body, "shpss_x")}
    first = provider.receive(body, headers)
    assert first.event_id == provider.receive(body, headers).event_id == body_digest_id(body)
    assert first.event_id.startswith("sha256:")


# --- Standard Webhooks --------------------------------------------------------------------


def _sw_headers(
    body: bytes, msg_id: str = "msg_1", timestamp: int | str = 1700000000, secret: str = SW_SECRET
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sw.sign(body, secret, msg_id, timestamp),
    }


def _sw(
    tolerance_seconds: int = 300, now: float = 1700000000, secrets: tuple[str, ...] = (SW_SECRET,)
) -> sw.StandardWebhooksProvider:
    return sw.StandardWebhooksProvider(secrets, tolerance_seconds, lambda: now)


def test_standard_webhooks_type_comes_from_the_body() -> None:
    body = b'{"type": "invoice.paid", "data": {}}'
    event = _sw().receive(body, _sw_headers(body))
    assert (event.event_id, event.event_type) == ("msg_1", "invoice.paid")
    assert event.signature == f"t=1700000000 {_sw_headers(body)['webhook-signature']}"
    for bad_type in (b'{"type": 5}', b'{"type": ""}', b'{"type": null}'):
        with pytest.raises(InvalidEvent):
            _sw().receive(bad_type, _sw_headers(bad_type))


@pytest.mark.parametrize(
    "signature",
    [
        "v1",
        "v1,",
        "v1,not base64!",
        "garbage",
        ",,,",
        "v1,%%%% v2,abc",
        "   ",
    ],
)
def test_standard_webhooks_malformed_signature_lists_are_400_not_500(signature) -> None:
    body = b'{"type": "x"}'
    headers = {**_sw_headers(body), "webhook-signature": signature}
    with pytest.raises(InvalidSignature):
        _sw().receive(body, headers)


ARABIC_INDIC_DIGITS = "\u0661\u0667" + "\u0660" * 8  # int() would take them


@pytest.mark.parametrize(
    "timestamp", ["01700000000", "1700000000.0", "-1", ARABIC_INDIC_DIGITS, ""]
)
def test_standard_webhooks_timestamp_must_be_plain_digits_as_signed(timestamp) -> None:
    body = b'{"type": "x"}'
    headers = {**_sw_headers(body), "webhook-timestamp": timestamp}
    with pytest.raises(InvalidSignature):
        _sw().receive(body, headers)


def test_standard_webhooks_tolerance_is_configurable() -> None:
    body = b'{"type": "x"}'
    headers = _sw_headers(body, timestamp=1700000000)
    _sw(tolerance_seconds=60, now=1700000060).receive(body, headers)
    with pytest.raises(InvalidSignature):
        _sw(tolerance_seconds=60, now=1700000061).receive(body, headers)
    with pytest.raises(InvalidSignature):
        _sw(tolerance_seconds=60, now=1699999939).receive(body, headers)


def test_standard_webhooks_secret_that_is_not_base64_is_400() -> None:
    body = b'{"type": "x"}'
    for secret in ("whsec_not*base64", "whsec_"):
        with pytest.raises(InvalidSignature):
            _sw(secrets=(secret,)).receive(body, _sw_headers(body))


def test_settings_name_the_secrets_and_the_tolerance() -> None:
    settings = Settings.from_env(
        {
            "GITHUB_WEBHOOK_SECRET": "a,b",
            "SHOPIFY_WEBHOOK_SECRET": "c",
            "STANDARD_WEBHOOKS_WEBHOOK_SECRET": SW_SECRET,
            "STANDARD_WEBHOOKS_WEBHOOK_TOLERANCE": "60",
        }
    )
    assert settings.provider_secrets == {
        "github": ("a", "b"),
        "shopify": ("c",),
        "standard-webhooks": (SW_SECRET,),
    }
    assert settings.standard_webhooks_tolerance_seconds == 60
    assert Settings.from_env({}).standard_webhooks_tolerance_seconds == 300


# --- The endpoint ------------------------------------------------------------------------


def _signed(provider: str, body: bytes) -> dict[str, str]:
    if provider == "github":
        return {"X-Hub-Signature-256": github.sign(body, "s")}
    if provider == "shopify":
        return {"X-Shopify-Hmac-Sha256": shopify.sign(body, "s")}
    return _sw_headers(body, timestamp=int(time.time()), secret="whsec_c2VjcmV0")


@pytest.mark.parametrize("provider", ["github", "shopify", "standard-webhooks"])
def test_a_known_provider_without_a_secret_answers_400(provider, database_url, db) -> None:
    body = b'{"type": "x"}'
    (response,) = _post(
        Settings(database_url=database_url), provider, body, _signed(provider, body)
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "InvalidSignature"
    assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0


def test_an_unknown_provider_answers_404(database_url) -> None:
    settings = _settings("gitlab", ("s",), database_url)
    (response,) = _post(settings, "gitlab", b"{}", {})
    assert response.status_code == 404
    with pytest.raises(UnknownProvider):
        get_provider("GitHub", settings)


def test_a_github_redelivery_is_a_duplicate_over_http(database_url, db) -> None:
    body = b'{"action": "closed", "number": 7}'
    headers = {
        **_signed("github", body),
        "X-GitHub-Delivery": "guid-1",
        "X-GitHub-Event": "pull_request",
    }
    first, again = _post(
        _settings("github", ("s",), database_url), "github", body, headers, times=2
    )
    assert (first.get_json()["duplicate"], again.get_json()["duplicate"]) == (False, True)
    row = db.execute("SELECT event_id, event_type, signature, payload FROM inbox").fetchall()
    assert row == [
        (
            "guid-1",
            "pull_request.closed",
            headers["X-Hub-Signature-256"],
            {"action": "closed", "number": 7},
        )
    ]
