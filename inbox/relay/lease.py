"""How long a relay may trust the leases it holds (docs/decisions.md, "A hung relay gives
its messages back").

Another relay's rescue takes a lease back once neither its claim nor a heartbeat of the
relay holding it is younger than INBOX_RELAY_TAKEOVER_SECONDS (outbox_rescue). The
heartbeat is beaten from the relay's loop thread on every poll tick, so a relay that is
merely slow (a long send in a delivery thread) keeps its leases however long the send
takes, and one whose loop stops (frozen, deadlocked, SIGSTOP) loses them.

The relay itself must then not send a message it may have lost: a delivery thread starts a
send only while the lease is younger than the *self-stop*, the takeover minus the longest
a send can last (the send budget), all measured from the last sign of life the database
saw (the claim or a beat) on this process's monotonic clock. A send started before the
self-stop ends, within its budget, before the takeover can happen (the watchdog of
inbox/relay/transports/deadline.py cuts any send at its budget, whatever the destination
does); a message not started is given back instead (outbox_release, fenced by locked_by:
a no-op once it changed hands).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from inbox.config import DEFAULT_RELAY_TAKEOVER_SECONDS, ConfigError, Settings

# The self-stop must leave the loop a few poll ticks to beat between two sends.
MIN_TICKS_BEFORE_SELF_STOP = 3


def send_budget_seconds(settings: Settings) -> float:
    """The longest one send lasts, start to end: connect plus read timeout for an HTTP
    POST, the SMTP timeout for a whole SMTP session. A total, not one silence: the
    transports' watchdog cuts a send that reaches it (a destination trickling its answer
    a byte at a time included)."""
    http = settings.http_connect_timeout_seconds + settings.http_read_timeout_seconds
    return max(http, settings.smtp_timeout_seconds)


def takeover_seconds(settings: Settings) -> float:
    """INBOX_RELAY_TAKEOVER_SECONDS; unset (0): 120 s, or more when the send timeouts and
    the poll interval need it (the self-stop's minimum, plus 1 s)."""
    if settings.relay_takeover_seconds:
        return settings.relay_takeover_seconds
    least = send_budget_seconds(settings) + _least_self_stop_seconds(settings) + 1.0
    return max(DEFAULT_RELAY_TAKEOVER_SECONDS, least)


def self_stop_seconds(settings: Settings) -> float:
    """Leases older than this (since the last beat) are not started; raises ConfigError when
    the takeover leaves no room for it."""
    takeover = takeover_seconds(settings)
    self_stop = takeover - send_budget_seconds(settings)
    if self_stop < _least_self_stop_seconds(settings):
        raise ConfigError(
            f"INBOX_RELAY_TAKEOVER_SECONDS={takeover:g} is too short: it must exceed the "
            f"send timeouts ({send_budget_seconds(settings):g} s: HTTP connect + read, or "
            f"SMTP) by {MIN_TICKS_BEFORE_SELF_STOP} poll intervals "
            f"({MIN_TICKS_BEFORE_SELF_STOP * settings.poll_interval_seconds:g} s)"
        )
    return self_stop


def _least_self_stop_seconds(settings: Settings) -> float:
    return MIN_TICKS_BEFORE_SELF_STOP * settings.poll_interval_seconds


class LeaseClock:
    """When this relay last showed the database it is alive, and whether a lease taken at
    `leased_at` (monotonic, read before the claim was sent) may still start a send.

    The loop thread reports each beat (`beaten`); delivery threads ask (`may_start`). A gap
    between two beats as long as the self-stop means another relay may have taken every
    lease held before it: those are never started, even once the beats resume.
    """

    def __init__(self, self_stop_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.self_stop_seconds = self_stop_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._last_beat: float | None = None  # when the last beat was sent
        self._broken_at = float("-inf")  # leases taken before this may be lost

    def beaten(self, started: float, finished: float) -> None:
        """A beat sent at `started` was recorded by `finished`. The database dates it
        between the two; the gap since the previous beat is measured at its longest."""
        with self._lock:
            if self._last_beat is not None and finished - self._last_beat >= self.self_stop_seconds:
                self._broken_at = started
            self._last_beat = started

    def may_start(self, leased_at: float) -> bool:
        """True while the lease is surely still ours for a whole send."""
        with self._lock:
            if leased_at < self._broken_at:
                return False
            last_sign = leased_at if self._last_beat is None else max(leased_at, self._last_beat)
        return self.clock() - last_sign < self.self_stop_seconds
