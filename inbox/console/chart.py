"""The overview's charts: counts per minute as stacked SVG bars, drawn on the server
(no script: the page's CSP allows none)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from inbox.console.store import Series

HEIGHT = 100.0


@dataclass(frozen=True)
class Bar:
    x: int
    y: float
    height: float
    outcome: str
    title: str


@dataclass(frozen=True)
class Chart:
    title: str
    bars: Sequence[Bar]
    width: int
    peak: float
    start: datetime
    end: datetime
    totals: dict[str, int]
    unit: str


def stacked(title: str, series: Series, bucket_minutes: int = 1) -> Chart:
    """Bars of `bucket_minutes` each, the height of a bar the per-minute average."""
    outcomes = list(series.counts)
    count = len(series.minutes) // bucket_minutes
    buckets = []
    for b in range(count):
        part = slice(b * bucket_minutes, (b + 1) * bucket_minutes)
        buckets.append({o: sum(series.counts[o][part]) / bucket_minutes for o in outcomes})
    peak = max([sum(bucket.values()) for bucket in buckets] + [1.0])
    bars = []
    for x, bucket in enumerate(buckets):
        top = HEIGHT
        minute = series.minutes[x * bucket_minutes]
        for outcome in outcomes:
            value = bucket[outcome]
            if value <= 0:
                continue
            height = value / peak * HEIGHT
            top -= height
            bars.append(Bar(x, round(top, 2), round(height, 2), outcome,
                            f"{minute:%H:%M} UTC {outcome}: {value:g}/min"))
    totals = {o: sum(series.counts[o]) for o in outcomes}
    unit = "per minute" if bucket_minutes == 1 else f"per minute, {bucket_minutes}-minute bars"
    return Chart(title, bars, count, peak, series.minutes[0], series.minutes[-1], totals, unit)
