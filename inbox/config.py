"""Settings, read once from the environment (12-factor) at each entry point.

Nothing below the entry points reads `os.environ`: they receive a `Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

_Num = TypeVar("_Num", int, float)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Exponential backoff with full jitter: delay n is uniform in [0, min(cap, base * 2**(n-1))].
# With these defaults the upper bounds of 16 attempts add up to about three days
# (60 s doubling to the 8 h cap), like Stripe's own retry schedule.
DEFAULT_MAX_ATTEMPTS = 16
DEFAULT_RETRY_BASE_SECONDS = 60.0
DEFAULT_RETRY_CAP_SECONDS = 8 * 3600.0
DEFAULT_HANDLER_TIMEOUT_SECONDS = 30.0
DEFAULT_POLL_INTERVAL_SECONDS = 1.0
# The relay: delivery threads, and how many of them one destination (host) may occupy
# (0: half of them, so one hanging host never stalls the others).
DEFAULT_RELAY_CONCURRENCY = 32
DEFAULT_HTTP_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_HTTP_READ_TIMEOUT_SECONDS = 10.0
DEFAULT_SMTP_TIMEOUT_SECONDS = 30.0
DEFAULT_CONSOLE_SESSION_SECONDS = 8 * 3600.0
DEFAULT_STRIPE_API_BASE = "https://api.stripe.com"


class ConfigError(ValueError):
    """The environment holds a setting that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """Everything the processes need to know, with the unit in each name."""

    database_url: str | None = None
    stripe_webhook_secrets: tuple[str, ...] = ()
    stripe_webhook_tolerance_seconds: int = 300
    # POST /webhooks/stripe-connect: a Connect endpoint's secrets (rotation: comma-separated).
    stripe_connect_webhook_secrets: tuple[str, ...] = ()
    # Stripe's Events API (inbox/stripe/): a restricted key that may read events, and where
    # the API is (tests and stripe-mock point it elsewhere). Never logged, never printed.
    stripe_api_key: str | None = field(default=None, repr=False)
    stripe_api_base: str = DEFAULT_STRIPE_API_BASE
    # Automatic reconciliation by the workers, every this many seconds; 0: off.
    stripe_reconcile_seconds: float = 0.0
    standard_webhooks_tolerance_seconds: int = 300
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    handler_modules: tuple[str, ...] = ("handlers",)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_base_seconds: float = DEFAULT_RETRY_BASE_SECONDS
    retry_cap_seconds: float = DEFAULT_RETRY_CAP_SECONDS
    handler_timeout_seconds: float = DEFAULT_HANDLER_TIMEOUT_SECONDS
    poll_interval_seconds: float = DEFAULT_POLL_INTERVAL_SECONDS
    routes: str = "*=log:"
    # Standard Webhooks signing secrets of http(s) routes: `pattern=whsec_...,...`.
    route_secrets: str = ""
    relay_concurrency: int = DEFAULT_RELAY_CONCURRENCY
    relay_destination_concurrency: int = 0
    http_connect_timeout_seconds: float = DEFAULT_HTTP_CONNECT_TIMEOUT_SECONDS
    http_read_timeout_seconds: float = DEFAULT_HTTP_READ_TIMEOUT_SECONDS
    smtp_timeout_seconds: float = DEFAULT_SMTP_TIMEOUT_SECONDS
    # Secrets for providers other than Stripe, by provider name (see inbox.providers).
    provider_secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # How long the receiver waits for a database connection before answering 503.
    db_wait_seconds: float = 2.0
    # The bearer token of GET /metrics; unset: no /metrics (404).
    metrics_token: str | None = None
    # Seconds between two l2met metrics lines of a process (inbox/metrics/l2met.py); 0: none.
    log_metrics_seconds: float = 60.0
    # `text` (human lines) or `json` (one JSON object per line): inbox/logs.py.
    log_format: str = "text"
    # Alerts (inbox/alerts/): the backlog age that raises one, the signature failures within
    # five minutes that do, and the least time between two messages of one kind.
    alert_backlog_seconds: float = 600.0
    alert_signature_failures: int = 20
    alert_interval_seconds: float = 300.0
    # The operator console (inbox/console/): off (404) unless a password is set; the key
    # that signs its session cookies (default: derived from the password); how long a
    # login lasts.
    console_password: str | None = None
    console_secret_key: str | None = None
    console_session_seconds: float = DEFAULT_CONSOLE_SESSION_SECONDS
    # Deliveries to /webhooks/stripe and /webhooks/stripe-connect only from Stripe's
    # published webhook addresses (inbox/web/allowlist.py); others are answered 403.
    stripe_webhook_ip_allowlist: bool = False
    # Proxies in front of the web process that append to X-Forwarded-For (Heroku's router:
    # 1); 0: the peer's address is the client's (inbox/client_address.py).
    trusted_proxy_hops: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, failing loudly on bad values."""
        env = os.environ if environ is None else environ
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            stripe_webhook_secrets=_csv(env.get("STRIPE_WEBHOOK_SECRET", "")),
            stripe_webhook_tolerance_seconds=_number(env, "STRIPE_WEBHOOK_TOLERANCE", 300, int),
            stripe_connect_webhook_secrets=_csv(env.get("STRIPE_CONNECT_WEBHOOK_SECRET", "")),
            stripe_api_key=env.get("STRIPE_API_KEY", "").strip() or None,
            stripe_api_base=(env.get("STRIPE_API_BASE", "").strip().rstrip("/")
                             or DEFAULT_STRIPE_API_BASE),
            stripe_reconcile_seconds=_number(env, "INBOX_STRIPE_RECONCILE_SECONDS", 0.0, float),
            standard_webhooks_tolerance_seconds=_number(
                env, "STANDARD_WEBHOOKS_WEBHOOK_TOLERANCE", 300, int
            ),
            max_body_bytes=_number(env, "INBOX_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, int),
            handler_modules=_csv(env.get("INBOX_HANDLERS", "handlers")),
            max_attempts=_number(env, "INBOX_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, int),
            retry_base_seconds=_number(
                env, "INBOX_RETRY_BASE_SECONDS", DEFAULT_RETRY_BASE_SECONDS, float
            ),
            retry_cap_seconds=_number(
                env, "INBOX_RETRY_CAP_SECONDS", DEFAULT_RETRY_CAP_SECONDS, float
            ),
            handler_timeout_seconds=_number(
                env, "INBOX_HANDLER_TIMEOUT_SECONDS", DEFAULT_HANDLER_TIMEOUT_SECONDS, float
            ),
            poll_interval_seconds=_number(
                env, "INBOX_POLL_INTERVAL_SECONDS", DEFAULT_POLL_INTERVAL_SECONDS, float
            ),
            routes=env.get("INBOX_ROUTES", "*=log:"),
            route_secrets=env.get("INBOX_ROUTE_SECRETS", ""),
            relay_concurrency=_number(
                env, "INBOX_RELAY_CONCURRENCY", DEFAULT_RELAY_CONCURRENCY, int
            ),
            relay_destination_concurrency=_number(
                env, "INBOX_RELAY_DESTINATION_CONCURRENCY", 0, int
            ),
            http_connect_timeout_seconds=_number(
                env, "INBOX_HTTP_CONNECT_TIMEOUT_SECONDS", DEFAULT_HTTP_CONNECT_TIMEOUT_SECONDS,
                float,
            ),
            http_read_timeout_seconds=_number(
                env, "INBOX_HTTP_READ_TIMEOUT_SECONDS", DEFAULT_HTTP_READ_TIMEOUT_SECONDS, float
            ),
            smtp_timeout_seconds=_number(
                env, "INBOX_SMTP_TIMEOUT_SECONDS", DEFAULT_SMTP_TIMEOUT_SECONDS, float
            ),
            provider_secrets=_provider_secrets(env),
            db_wait_seconds=_number(env, "INBOX_DB_WAIT_SECONDS", 2.0, float),
            metrics_token=env.get("INBOX_METRICS_TOKEN") or None,
            log_metrics_seconds=_number(env, "INBOX_LOG_METRICS_SECONDS", 60.0, float),
            log_format=log_format_from_env(env),
            alert_backlog_seconds=_number(env, "INBOX_ALERT_BACKLOG_SECONDS", 600.0, float),
            alert_signature_failures=_number(env, "INBOX_ALERT_SIGNATURE_FAILURES", 20, int),
            alert_interval_seconds=_number(env, "INBOX_ALERT_INTERVAL_SECONDS", 300.0, float),
            console_password=env.get("INBOX_CONSOLE_PASSWORD") or None,
            console_secret_key=env.get("INBOX_CONSOLE_SECRET_KEY") or None,
            console_session_seconds=_number(env, "INBOX_CONSOLE_SESSION_SECONDS",
                                            DEFAULT_CONSOLE_SESSION_SECONDS, float),
            stripe_webhook_ip_allowlist=_flag(env, "STRIPE_WEBHOOK_IP_ALLOWLIST"),
            trusted_proxy_hops=_number(env, "INBOX_TRUSTED_PROXY_HOPS", 0, int),
        )

    def require_database_url(self) -> str:
        """The database URL, or a clear error for commands that cannot run without one."""
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (or run `inbox dev` for a local database)")
        return self.database_url


def log_format_from_env(env: Mapping[str, str] | None = None) -> str:
    """INBOX_LOG_FORMAT: `text` (default) or `json`; read alone by the web process's
    post_fork, which sets up logging before the app reads its settings."""
    env = os.environ if env is None else env
    raw = env.get("INBOX_LOG_FORMAT", "").strip().lower() or "text"
    if raw not in ("text", "json"):
        raise ConfigError(f"INBOX_LOG_FORMAT={raw!r} is not one of text, json")
    return raw


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


FLAG_VALUES = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False, "": False}


def _flag(env: Mapping[str, str], name: str) -> bool:
    """A switch: 1/true/yes/on or 0/false/no/off (unset: off); anything else is an error
    rather than a guess, so a typo never leaves a lock open."""
    raw = env.get(name, "").strip().lower()
    if raw not in FLAG_VALUES:
        raise ConfigError(f"{name}={raw!r} is not one of 1, 0, true, false, yes, no, on, off")
    return FLAG_VALUES[raw]


def _number(env: Mapping[str, str], name: str, default: _Num, kind: type[_Num]) -> _Num:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


STRIPE_SECRET_VARIABLES = ("STRIPE_WEBHOOK_SECRET", "STRIPE_CONNECT_WEBHOOK_SECRET")


def _provider_secrets(env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """`<PROVIDER>_WEBHOOK_SECRET` for each provider other than Stripe, e.g. GITHUB_..."""
    secrets = {}
    for name, value in env.items():
        if name.endswith("_WEBHOOK_SECRET") and name not in STRIPE_SECRET_VARIABLES:
            provider = name.removesuffix("_WEBHOOK_SECRET").lower().replace("_", "-")
            secrets[provider] = _csv(value)
    return secrets
