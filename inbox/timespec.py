"""Durations and points in time as operators type them on the command line.

`30d`, `12h`, `90m`, `45s`, `2w` (and combinations such as `1d12h`) are durations;
`--since 2h` means two hours ago; `--since 2024-07-25` or `2024-07-25T10:00` (local time
unless an offset is given, e.g. `2024-07-25T10:00+00:00`) is a point in time.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:\d+[wdhms])+")
_PART = re.compile(r"(\d+)([wdhms])")


class BadTimeSpec(ValueError):
    """Not a duration (30d, 12h, 90m) or a time (2024-07-25, 2024-07-25T10:00)."""


def parse_duration(text: str) -> timedelta:
    """`30d` → 30 days; units w, d, h, m, s, combinable (`1h30m`)."""
    spec = text.strip().lower()
    if not _DURATION.fullmatch(spec):
        raise BadTimeSpec(f"{text!r} is not a duration such as 30d, 12h or 90m")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(spec))
    return timedelta(seconds=seconds)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """A duration means that long before `now`; otherwise an ISO 8601 date or time."""
    now = now or datetime.now(UTC)
    spec = text.strip()
    if _DURATION.fullmatch(spec.lower()):
        return now - parse_duration(spec)
    try:
        moment = datetime.fromisoformat(spec)
    except ValueError:
        raise BadTimeSpec(
            f"{text!r} is neither a duration (2h, 3d) nor a time (2024-07-25T10:00)"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()  # naive: local time


def time_arg(text: str) -> datetime:
    """argparse `type=` for --since/--until: a clean usage error on bad input."""
    try:
        return parse_time(text)
    except BadTimeSpec as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_arg(text: str) -> timedelta:
    """argparse `type=` for a duration such as --older-than 30d."""
    try:
        return parse_duration(text)
    except BadTimeSpec as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
