"""What the runner (each child's loop) and the supervisor (the parent) share.

`LoopSpec` says what a loop is and how many children run it; a claimer gets a `Control`
from its loop; the `Heartbeat` is the shared memory the supervisor's watchdog and the
children read; the exit codes are the process's. The runner and the supervisor both
import from here, and the supervisor imports the runner, never the other way round.
"""

from __future__ import annotations

import mmap
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected error (a bug), logged
EXIT_SHUTDOWN_TIMEOUT = 3  # the graceful stop took too long: children were killed
EXIT_INTERRUPTED = 130  # second SIGTERM or SIGINT: exited at once, work in hand rolled back


class Control(Protocol):
    """What a claimer gets from the runner."""

    def stop_requested(self) -> bool:
        """True once shutdown began: finish the item in hand, start no other."""
        ...

    def busy(self) -> None:
        """An item's handler starts now (the watchdog times it)."""
        ...

    def idle(self) -> None:
        """The item's handler is done."""
        ...


class Claimer(Protocol):
    """One loop's unit of work, made in the child process by `LoopSpec.make_claimer`."""

    def run_once(self) -> int:
        """Claim due items and process them; how many were claimed (0: nothing due)."""
        ...

    def more_may_be_due(self, claimed: int) -> bool:
        """After a turn that claimed `claimed` items: True to take another turn at once,
        False to wait for a wake-up (a NOTIFY sent meanwhile ends the wait at once)."""
        ...

    def rescue(self) -> int:
        """Recover the leases of dead processes; how many."""
        ...

    def tick(self) -> None:
        """Once per poll interval: `rescue()`, then the process's tick duties (heartbeat,
        alerts, metrics line: inbox/runtime/duties.py)."""
        ...

    def release(self) -> int:
        """Give back this claimer's leases without charging an attempt (exit at once)."""
        ...

    def close(self) -> None: ...


class NullControl:
    """A control that never stops and times nothing (tests, one-off use)."""

    def stop_requested(self) -> bool:
        return False

    def busy(self) -> None:
        pass

    def idle(self) -> None:
        pass


@dataclass(frozen=True)
class LoopSpec:
    """One kind of loop and how many processes run it."""

    name: str  # "worker", "relay": for logs
    database_url: str
    listen_query: str  # the named query that LISTENs on the wake-up channel
    make_claimer: Callable[[Control], Claimer]  # called in the child, after fork
    poll_interval_seconds: float
    concurrency: int = 1
    busy_limit_seconds: float | None = None  # watchdog: None or 0 disables it


class Heartbeat:
    """Per-child state in shared memory: "busy since" times (the watchdog's view of the
    children) and whether each child waits for a wake-up (its siblings' view)."""

    def __init__(self, slots: int) -> None:
        self._memory = mmap.mmap(-1, 16 * max(slots, 1))  # anonymous, shared across fork

    def set(self, slot: int, value: float) -> None:
        struct.pack_into("d", self._memory, 16 * slot, value)

    def get(self, slot: int) -> float:
        return struct.unpack_from("d", self._memory, 16 * slot)[0]

    def set_waiting(self, slot: int, waiting: bool) -> None:
        struct.pack_into("d", self._memory, 16 * slot + 8, 1.0 if waiting else 0.0)

    def waiting(self, slot: int) -> bool:
        return struct.unpack_from("d", self._memory, 16 * slot + 8)[0] != 0.0


def ignore_stop_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
