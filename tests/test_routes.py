"""INBOX_ROUTES and INBOX_ROUTE_SECRETS: parsed and checked at start-up (no database)."""

from __future__ import annotations

import base64

import pytest

from inbox.config import ConfigError
from inbox.relay.routes import parse_routes

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()


def test_first_matching_pattern_wins():
    table = parse_routes(
        "email.*=smtp://localhost:1025,crm.vip.*=https://vip.example/hook,"
        "crm.*=https://crm.example/hook,*=log:"
    )
    assert table.match("email.send").scheme == "smtp"
    assert table.match("crm.vip.contact").url == "https://vip.example/hook"
    assert table.match("crm.contact").url == "https://crm.example/hook"
    assert table.match("anything.else").scheme == "log"


def test_patterns_are_case_sensitive_globs_and_unmatched_topics_have_no_route():
    table = parse_routes("crm.?=http://a.example/,Billing.[ab]*=http://b.example/")
    assert table.match("crm.x").host == "a.example"
    assert table.match("crm.xy") is None
    assert table.match("Billing.abc").host == "b.example"
    assert table.match("billing.abc") is None


def test_destinations_group_routes_by_host_and_port():
    table = parse_routes(
        "a=http://h.example/one,b=http://h.example:80/two,c=https://h.example/,"
        "d=smtps://u:p@mail.example,e=log:"
    )
    dest = {r.pattern: r.destination for r in table.routes}
    assert dest["a"] == dest["b"] == "http://h.example:80"
    assert dest["c"] == "https://h.example:443"
    assert dest["d"] == "smtps://mail.example:465"
    assert dest["e"] == "log:"


def test_smtp_credentials_and_options():
    route = parse_routes("email.*=smtp://me%40x.example:p%2Cw@mail.example:587?from=a@x.example"
                         "&starttls=1").routes[0]
    assert (route.host, route.port) == ("mail.example", 587)
    assert (route.username, route.password) == ("me@x.example", "p,w")
    assert route.options == {"from": "a@x.example", "starttls": "1"}
    assert "p%2Cw" not in route.safe_url and "***" in route.safe_url
    assert "p%2Cw" not in repr(route)


def test_whitespace_and_empty_entries_are_ignored():
    table = parse_routes(" crm.* = http://a.example/ , , *=log: ")
    assert [r.pattern for r in table.routes] == ["crm.*", "*"]


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ("", "empty"),
        ("crm.*", "pattern=url"),
        ("=http://a.example/", "pattern=url"),
        ("crm.*=ftp://a.example/", "unknown scheme"),
        ("crm.*=https:///hook", "no host"),
        ("crm.*=http://a.example:99999/", "(?i)port"),
        ("crm.*=http://user:pw@a.example/", "credentials"),
        ("email.*=smtp://mail.example/path", "no path"),
        ("email.*=smtp://mail.example?sender=x", "unknown option"),
        ("email.*=smtps://mail.example?starttls=1", "already TLS"),
        ("x=log:stdout", "just `log:`"),
        ("a=log:,a=http://a.example/", "twice"),
    ],
)
def test_bad_routes_are_refused_with_a_clear_message(routes, message):
    with pytest.raises(ConfigError, match=message):
        parse_routes(routes)


def test_secrets_attach_to_their_http_route_and_rotation_gives_two_keys():
    old = "whsec_" + base64.b64encode(b"old-secret-old-secret").decode()
    table = parse_routes("crm.*=https://crm.example/,*=log:",
                         f"crm.*={SECRET},crm.*={old}")
    crm = table.match("crm.x")
    assert crm.secrets == (b"0123456789abcdef0123", b"old-secret-old-secret")
    assert table.match("other").secrets == ()
    assert "(signed)" in table.describe() and SECRET not in table.describe()


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        (f"nope.*={SECRET}", "not a pattern of INBOX_ROUTES"),
        (f"*={SECRET}", "only http"),
        ("crm.*=whsec_!!!notbase64", "whsec_<base64>"),
        ("crm.*=whsec_c2hvcnQ=", "too short"),
        ("crm.*", "pattern=whsec_"),
    ],
)
def test_bad_secrets_are_refused(secrets, message):
    with pytest.raises(ConfigError, match=message):
        parse_routes("crm.*=https://crm.example/,*=log:", secrets)
