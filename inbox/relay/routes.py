"""Routes: which transport delivers each outbox topic, parsed once when the relay starts.

`INBOX_ROUTES` is a comma-separated list of `pattern=url`, tried in order; the first
pattern that matches the topic (fnmatch-style, case-sensitive: `*`, `?`, `[abc]`) wins:

    email.*=smtp://user:pass@mail.example:587?from=billing@example.com,
    crm.*=https://crm.example/hook,
    *=log:

URLs: `http://` and `https://` (POST the payload as JSON), `smtp://` and `smtps://`
(implicit TLS; credentials in the URL, percent-encoded; `?from=` the default sender,
`?starttls=1` to require STARTTLS on smtp://), `log:` (write it to the log).

`INBOX_ROUTE_SECRETS` signs an http(s) route with Standard Webhooks headers: comma-separated
`pattern=whsec_<base64>`, the pattern written exactly as in INBOX_ROUTES. A pattern given
twice is signed with both secrets (rotation: receivers accept either signature).

Everything is checked here, so a typo stops the relay at start-up with a clear message
instead of sending every message to `dead` later.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs, unquote, urlsplit

from inbox.config import ConfigError

HTTP_SCHEMES = ("http", "https")
SMTP_SCHEMES = ("smtp", "smtps")
SCHEMES = (*HTTP_SCHEMES, *SMTP_SCHEMES, "log")
SECRET_PREFIX = "whsec_"
DEFAULT_PORTS = {"http": 80, "https": 443, "smtp": 25, "smtps": 465}
SMTP_OPTIONS = ("from", "starttls")
TOPIC_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Route:
    """One `pattern=url` of INBOX_ROUTES, validated."""

    pattern: str
    url: str = field(repr=False)  # may hold an smtp password: see safe_url
    scheme: str
    # What per-destination concurrency is counted by: one slow host occupies only its own
    # slots. `scheme://host:port` for network routes, `log:` for the log.
    destination: str
    host: str = ""
    port: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict)
    # Standard Webhooks signing keys (decoded), newest first; http(s) routes only.
    secrets: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for logs and error messages."""
        if self.password is None:
            return self.url
        return self.url.replace(f":{urlsplit(self.url).password}@", ":***@", 1)


    @property
    def log_url(self) -> str:
        """safe_url, with an http(s) URL's path and query shown as `/...`."""
        if self.scheme in HTTP_SCHEMES and urlsplit(self.url).path not in ("", "/"):
            return f"{self.destination}/..."
        return self.safe_url


class RouteTable:
    """The routes in order; `match(topic)` gives the first whose pattern matches."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = tuple(routes)
        self._cache: dict[str, Route | None] = {}

    def match(self, topic: str) -> Route | None:
        try:
            return self._cache[topic]
        except KeyError:
            pass
        found = next((r for r in self.routes if fnmatch.fnmatchcase(topic, r.pattern)), None)
        if len(self._cache) < TOPIC_CACHE_SIZE:
            self._cache[topic] = found
        return found

    def describe(self) -> str:
        """`pattern=url, ...` for the start-up log line: passwords hidden, and an http(s)
        URL's path too (it can be a credential itself: a Slack incoming webhook's)."""
        return ", ".join(
            f"{r.pattern}={r.log_url}" + (" (signed)" if r.secrets else "") for r in self.routes
        )


def parse_routes(routes_text: str, secrets_text: str = "") -> RouteTable:
    """Parse INBOX_ROUTES and INBOX_ROUTE_SECRETS; raise ConfigError on anything unusable."""
    routes: list[Route] = []
    seen: set[str] = set()
    for entry in _entries(routes_text):
        pattern, url = _split_entry(entry, "INBOX_ROUTES", "pattern=url")
        if pattern in seen:
            raise ConfigError(f"INBOX_ROUTES: pattern {pattern!r} appears twice")
        seen.add(pattern)
        routes.append(parse_route(pattern, url))
    if not routes:
        raise ConfigError("INBOX_ROUTES is empty: give at least one pattern=url (e.g. *=log:)")
    secrets = parse_secrets(secrets_text)
    by_pattern = {r.pattern: r for r in routes}
    for pattern in secrets:
        route = by_pattern.get(pattern)
        if route is None:
            raise ConfigError(
                f"INBOX_ROUTE_SECRETS: pattern {pattern!r} is not a pattern of INBOX_ROUTES"
            )
        if route.scheme not in HTTP_SCHEMES:
            raise ConfigError(
                f"INBOX_ROUTE_SECRETS: route {pattern!r} is {route.scheme}:, "
                "only http(s) routes are signed"
            )
    return RouteTable([replace(r, secrets=tuple(secrets.get(r.pattern, ()))) for r in routes])


def parse_route(pattern: str, url: str) -> Route:
    """Validate one route's URL."""
    where = f"INBOX_ROUTES: route {pattern}={url}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"{where}: unknown scheme {parts.scheme!r} (use one of {SCHEMES})")
    if scheme == "log":
        if url.lower() != "log:":
            raise ConfigError(f"{where}: write the log route as just `log:`")
        return Route(pattern, url, scheme, destination="log:")
    host = parts.hostname
    if not host:
        raise ConfigError(f"{where}: no host")
    port = port or DEFAULT_PORTS[scheme]
    common = {
        "host": host,
        "port": port,
        "destination": f"{scheme}://{host}:{port}",
    }
    if scheme in HTTP_SCHEMES:
        if parts.username or parts.password:
            raise ConfigError(f"{where}: credentials in an http(s) URL are not sent; remove them")
        return Route(pattern, url, scheme, **common)
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"{where}: an smtp URL has no path; options go in ?from=&starttls=")
    options = {}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        if key not in SMTP_OPTIONS:
            raise ConfigError(f"{where}: unknown option {key!r} (known: {SMTP_OPTIONS})")
        options[key] = values[-1]
    if options.get("starttls", "0") not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"{where}: starttls must be 1 or 0")
    if scheme == "smtps" and options.get("starttls") in ("1", "true", "yes"):
        raise ConfigError(f"{where}: smtps is already TLS; starttls is for smtp://")
    return Route(
        pattern,
        url,
        scheme,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        options=options,
        **common,
    )


def parse_secrets(text: str) -> dict[str, list[bytes]]:
    """INBOX_ROUTE_SECRETS: {pattern: [decoded key, ...]} in the order given."""
    secrets: dict[str, list[bytes]] = {}
    for entry in _entries(text):
        pattern, value = _split_entry(entry, "INBOX_ROUTE_SECRETS", "pattern=whsec_...")
        secrets.setdefault(pattern, []).append(decode_secret(value, pattern))
    return secrets


def decode_secret(value: str, pattern: str = "") -> bytes:
    """A Standard Webhooks secret `whsec_<base64>` as the key bytes."""
    raw = value.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"INBOX_ROUTE_SECRETS: the secret for {pattern!r} is not whsec_<base64>"
        ) from None
    if len(key) < 16:
        raise ConfigError(
            f"INBOX_ROUTE_SECRETS: the secret for {pattern!r} is too short (16 bytes at least)"
        )
    return key


def _entries(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _split_entry(entry: str, variable: str, form: str) -> tuple[str, str]:
    pattern, sep, value = entry.partition("=")
    if not sep or not pattern.strip() or not value.strip():
        raise ConfigError(f"{variable}: {entry!r} is not of the form {form}")
    return pattern.strip(), value.strip()
