"""How long a relay trusts its leases (inbox/relay/lease.py): pure, no database."""

from __future__ import annotations

import pytest

from inbox.config import ConfigError, Settings
from inbox.relay.lease import (
    LeaseClock,
    self_stop_seconds,
    send_budget_seconds,
    takeover_seconds,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_self_stop_leaves_a_whole_send_before_the_takeover():
    settings = Settings()  # connect 5 + read 10 for HTTP, 30 for SMTP; takeover 120
    assert send_budget_seconds(settings) == 30.0
    assert self_stop_seconds(settings) == 90.0
    http = Settings(smtp_timeout_seconds=1, http_connect_timeout_seconds=0.5,
                    http_read_timeout_seconds=2, relay_takeover_seconds=4,
                    poll_interval_seconds=0.2)
    assert self_stop_seconds(http) == 1.5


def test_the_default_takeover_grows_with_the_timeouts_and_the_poll_interval():
    assert takeover_seconds(Settings(poll_interval_seconds=60)) == 30 + 180 + 1
    assert takeover_seconds(Settings(smtp_timeout_seconds=300)) == 300 + 3 + 1
    assert takeover_seconds(Settings(relay_takeover_seconds=45)) == 45  # as configured


def test_a_takeover_shorter_than_the_timeouts_is_refused():
    with pytest.raises(ConfigError, match="INBOX_RELAY_TAKEOVER_SECONDS=32 is too short"):
        self_stop_seconds(Settings(relay_takeover_seconds=32))  # 30 s SMTP + 3 polls of 1 s
    assert self_stop_seconds(Settings(relay_takeover_seconds=33)) == 3.0


def test_settings_read_the_takeover():
    assert Settings.from_env({"INBOX_RELAY_TAKEOVER_SECONDS": "45"}).relay_takeover_seconds == 45


def test_a_lease_may_start_while_beats_keep_coming():
    clock = Clock()
    leases = LeaseClock(10.0, clock)
    leased_at = clock.now
    for _ in range(30):  # 60 s of beats every 2 s: a slow relay keeps its leases
        clock.now += 2
        leases.beaten(clock.now, clock.now + 0.1)
        assert leases.may_start(leased_at)


def test_a_lease_without_beats_expires_at_the_self_stop():
    clock = Clock()
    leases = LeaseClock(10.0, clock)
    leases.beaten(clock.now, clock.now)
    leased_at = clock.now + 1
    clock.now += 10.9  # 9.9 s after the claim, the newest sign of life
    assert leases.may_start(leased_at)
    clock.now += 0.2
    assert not leases.may_start(leased_at)
    assert leases.may_start(clock.now)  # a lease claimed now is fresh


def test_leases_held_across_a_long_gap_never_start_again():
    """A relay frozen longer than its self-stop may have lost everything it held: a beat
    after the gap does not make those leases good again."""
    clock = Clock()
    leases = LeaseClock(10.0, clock)
    leases.beaten(clock.now, clock.now)
    before = clock.now
    clock.now += 30  # frozen
    leases.beaten(clock.now, clock.now + 0.1)
    assert not leases.may_start(before)
    assert leases.may_start(clock.now + 0.2)  # claimed after the gap: ours


def test_a_gap_is_measured_from_the_start_of_the_last_beat_to_the_end_of_the_next():
    clock = Clock()
    leases = LeaseClock(10.0, clock)
    leases.beaten(clock.now, clock.now)
    leased_at = clock.now
    leases.beaten(clock.now + 9.5, clock.now + 10.0)  # the database may date it at 10 s
    clock.now += 10.0
    assert not leases.may_start(leased_at)
