"""Who may use the console: the password, the session cookie, CSRF, the headers.

- One password (INBOX_CONSOLE_PASSWORD), compared in constant time. A client (its
  address, as inbox.client_address tells it behind INBOX_TRUSTED_PROXY_HOPS proxies, so
  writing another X-Forwarded-For does not make it another client) that gets it wrong
  keeps waiting longer before it may try again: after FREE_FAILURES wrong tries, 2**n
  seconds, up to MAX_WAIT_SECONDS (per web process).
- The session is Flask's signed cookie: HttpOnly, SameSite=Strict, Secure unless the
  request came to localhost, path /console/; it ends SESSION_SECONDS after the login
  whatever the activity (the login time is in the signed cookie).
- Its key is INBOX_CONSOLE_SECRET_KEY when set, else derived from the password (HMAC):
  every web process and dyno then signs alike with no extra setting, and changing the
  password ends every session (docs/decisions.md, "Console: sessions").
- Every POST carries the session's CSRF token in a hidden input; one without it, or with
  another, changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict

from flask import Flask, Request, current_app, request, session
from flask.sessions import SecureCookieSessionInterface

from inbox import client_address as addresses
from inbox.config import Settings

COOKIE_NAME = "inbox_console"
# The app.config key of INBOX_TRUSTED_PROXY_HOPS (set by `configure`).
HOPS_CONFIG = "INBOX_TRUSTED_PROXY_HOPS"
# The client of a request that did not come through the trusted proxies: such clients
# share one slow-down (the proxies always add an entry, so only a misrouted one lacks it).
UNTRUSTED_CLIENT = "unknown"
FREE_FAILURES = 3
MAX_WAIT_SECONDS = 300.0
TRACKED_CLIENTS = 10_000
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def secret_key(settings: Settings) -> bytes:
    """The key that signs session cookies."""
    if settings.console_secret_key:
        return settings.console_secret_key.encode()
    assert settings.console_password
    return hmac.new(settings.console_password.encode(), b"inbox-console-session-key",
                    hashlib.sha256).digest()


def password_matches(given: str, password: str) -> bool:
    return hmac.compare_digest(given.encode(), password.encode())


def is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in LOCAL_HOSTS or host in LOCAL_HOSTS


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, Secure unless the request came to localhost."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return not is_local(request.host)


def configure(app: Flask, settings: Settings) -> None:
    """Session settings of an app that serves the console."""
    app.secret_key = secret_key(settings)
    app.session_interface = ConsoleSessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/console/",
        PERMANENT_SESSION_LIFETIME=settings.console_session_seconds,
    )
    app.config[HOPS_CONFIG] = settings.trusted_proxy_hops


def client_address(req: Request) -> str:
    """The operator's address, the same the webhook route's allowlist would see."""
    hops = current_app.config.get(HOPS_CONFIG, 0)
    return addresses.client_address(req.environ, hops) or UNTRUSTED_CLIENT


def now() -> float:
    """The wall clock of session ages (a function, so tests can move it)."""
    return time.time()


def logged_in(session_seconds: float) -> bool:
    login_at = session.get("login_at")
    return isinstance(login_at, int | float) and 0 <= now() - login_at < session_seconds


def log_in() -> None:
    """A fresh session (a new CSRF token: nothing of the anonymous one carries over)."""
    session.clear()
    session.permanent = True
    session["login_at"] = now()
    session["csrf"] = secrets.token_urlsafe(32)


def csrf_token() -> str:
    """The session's CSRF token, made on first use (the login form has one too)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_valid(given: str | None) -> bool:
    token = session.get("csrf")
    return (isinstance(token, str) and isinstance(given, str)
            and hmac.compare_digest(given.encode(), token.encode()))


class Throttle:
    """Wrong passwords per client, and how long each must wait before its next try."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def wait_seconds(self, client: str) -> float:
        with self._lock:
            failures, last = self._failures.get(client, (0, 0.0))
        if failures < FREE_FAILURES:
            return 0.0
        delay = min(MAX_WAIT_SECONDS, 2.0 ** (failures - FREE_FAILURES + 1))
        return max(0.0, last + delay - self._clock())

    def failed(self, client: str) -> None:
        with self._lock:
            failures, _ = self._failures.pop(client, (0, 0.0))
            self._failures[client] = (failures + 1, self._clock())
            while len(self._failures) > TRACKED_CLIENTS:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
