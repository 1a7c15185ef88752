"""Metrics as log lines, Heroku's way: Heroku scrapes nothing, it reads logs.

Every INBOX_LOG_METRICS_SECONDS (60; 0: never) each worker, relay and web process logs
one line in the l2met convention, which Heroku's log drains and add-ons (Librato, l2met
itself) turn into metrics:

    source=worker.1 sample#inbox.due=12 sample#inbox.oldest_due_seconds=3.2 ...
        count#inbox.processed=812

- `sample#` figures describe the whole system, read from PostgreSQL like /metrics reads
  them (inbox/store/system_state.py): every process may log them, and a sample is
  averaged, not added, so they are not counted twice;
- `count#` figures are the process's own, since its previous line (what this worker
  processed, what this relay sent): counts are added up across processes, so each
  process reports only what it did.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping

from inbox.store.system_state import SystemState

log = logging.getLogger("inbox.metrics")


def system_samples(state: SystemState) -> dict[str, float]:
    """The system's figures worth a `sample#`, by l2met name."""
    samples: dict[str, float] = {
        "inbox.due": state.inbox_backlog.due,
        "inbox.oldest_due_seconds": round(state.inbox_backlog.oldest_due_seconds, 3),
        "inbox.leased": state.inbox_backlog.leased,
        "outbox.due": state.outbox_backlog.due,
        "outbox.oldest_due_seconds": round(state.outbox_backlog.oldest_due_seconds, 3),
        "outbox.leased": state.outbox_backlog.leased,
    }
    samples.update({f"inbox.{status}": n for status, n in state.inbox.items()})
    samples.update({f"outbox.{status}": n for status, n in state.outbox.items()})
    return samples


def format_line(source: str, samples: Mapping[str, float], counts: Mapping[str, int]) -> str:
    """One l2met line: `source=… sample#name=value … count#name=n …` (names as given)."""
    parts = [f"source={source}"]
    parts += [f"sample#{name}={_number(value)}" for name, value in samples.items()]
    parts += [f"count#{name}={n}" for name, n in counts.items()]
    return " ".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class ProcessCounts:
    """What this process did since its previous metrics line; thread-safe."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def take(self) -> dict[str, int]:
        """The counts so far, and start again from zero."""
        with self._lock:
            counts, self._counts = dict(self._counts), Counter()
        return counts


class MetricsLogger:
    """Logs one l2met line every `interval_seconds`.

    The reporting duties (inbox/metrics/duties.py) call `log_if_due()` on their tick: the
    worker's and relay's loop between items, the web's duties thread in the web process.
    `read_state` reads the system on a connection of its own (None when the database
    cannot answer: the line then carries only the process's own counts).
    """

    def __init__(self, source: str, interval_seconds: float,
                 read_state: Callable[[], SystemState | None], counts: ProcessCounts) -> None:
        self.source = source
        self.interval_seconds = interval_seconds
        self.read_state = read_state
        self.counts = counts
        self._next_at: float | None = None

    def log_if_due(self, now: float) -> str | None:
        """Log a line if `interval_seconds` passed since the previous one (or the first
        call); the line, or None."""
        if self.interval_seconds <= 0:
            return None
        if self._next_at is None:
            self._next_at = now + self.interval_seconds
            return None
        if now < self._next_at:
            return None
        self._next_at = now + self.interval_seconds
        return self.log_once()

    def log_once(self) -> str:
        """Read, format and log one line now; the line."""
        try:
            state = self.read_state()
        except Exception as exc:  # the line must not take the process down
            log.warning("metrics line: reading the system failed: %s", exc)
            state = None
        samples = system_samples(state) if state is not None else {}
        line = format_line(self.source, samples, self.counts.take())
        log.info(line)
        return line
