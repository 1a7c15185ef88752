"""Retry schedule: exponential backoff with full jitter, shared by worker and relay, and
Retry-After as servers send it (the relay's HTTP routes, Stripe's API)."""

from __future__ import annotations

import email.utils
import random


def backoff_ceiling_seconds(attempt: int, base_seconds: float, cap_seconds: float) -> float:
    """The longest wait after failed attempt number `attempt` (1-based): base * 2**(n-1), capped."""
    exponent = min(max(attempt - 1, 0), 62)  # 2**62 already exceeds any sane cap
    return min(cap_seconds, base_seconds * (2**exponent))


def next_attempt_delay_seconds(
    attempt: int,
    base_seconds: float,
    cap_seconds: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next attempt: uniform in [0, ceiling] ("full jitter").

    Full jitter spreads retries of events that failed together (an outage of the
    database behind a handler, a flaky endpoint) instead of retrying them in lockstep.
    """
    ceiling = backoff_ceiling_seconds(attempt, base_seconds, cap_seconds)
    return (rng or random).uniform(0.0, ceiling)


def honour_retry_after(delay_seconds: float, retry_after_seconds: float | None) -> float:
    """Never retry sooner than a server asked us to (HTTP Retry-After)."""
    if retry_after_seconds is None:
        return delay_seconds
    return max(delay_seconds, retry_after_seconds)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; parsedate gives naive for "-0000"
        return None
    return max(0.0, when.timestamp() - now)
