"""The chaos soak, short: the product's processes from the Procfile SIGKILLed one a second
and PostgreSQL crashed and restarted under a Stripe-like load lose, double and strand
nothing (bench/chaos.py runs it; `python -m bench chaos` is the long version).

No timed assertions: the backlog's drain time is reported, and only its deadline fails.
"""

from __future__ import annotations

import pytest

from bench.chaos import ChaosOptions, soak
from inbox.worker.loop import DEFAULT_BATCH_SIZE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(280)]

SHORT = ChaosOptions(seconds=30.0, rate=15.0, kill_every=1.0, restart_every=10.0,
                     down_seconds=1.0, backlog=1500, drain_deadline=90.0)


def test_chaos_soak_loses_doubles_and_strands_nothing():
    figures = soak(SHORT)
    print(figures.line())
    assert figures.problems[:10] == []
    assert (figures.lost, figures.doubled, figures.stuck, figures.exited_on_own) == (0, 0, 0, 0)
    assert figures.unacknowledged == 0
    # The chaos happened: kills, PostgreSQL crashes, refused first tries, a full batch killed.
    assert figures.kills >= 20 and figures.restarts >= 2
    assert figures.refused_first > 0 and figures.duplicates_sent > 0
    assert figures.backlog_held >= DEFAULT_BATCH_SIZE and figures.backlog_drain_seconds is not None
