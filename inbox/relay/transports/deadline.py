"""A total time limit on each send: one watchdog thread per relay process cuts the
connection of a send that outlives its limit (docs/decisions.md, "Every send has a total
time limit").

Socket timeouts bound one silence, not a whole answer: a destination that trickles its
answer a byte at a time, each byte within the read timeout, would keep a delivery thread,
and the lease of its message, forever. The lease arithmetic (inbox/relay/lease.py) needs a
send to end within its budget, so each send is watched: `start` registers it with its
deadline, `stop` forgets it (a set insert and removal: the HTTP transport makes thousands
of sends a second, too many for a timer or a thread each). The watchdog
wakes every WATCHDOG_TICK_SECONDS and shuts down the socket of any send past its deadline:
the blocked read or write in the delivery thread returns at once, and the transport reports
a retry (SendDeadline) and never reuses that connection.

A deadline is set one tick early, so that a send is cut before its limit, never after.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

WATCHDOG_TICK_SECONDS = 0.1


class SendDeadline(TimeoutError):
    """The destination did not answer completely within the send's time limit."""

    def __init__(self, limit_seconds: float) -> None:
        super().__init__(f"no complete answer within {limit_seconds:g} s")


class Cutter:
    """A descriptor of its own on a connection's socket (socket.dup), to shut it down from
    another thread. Shutting down one descriptor ends the blocked reads and writes on all of
    them, and this one stays valid when TLS wraps the original (wrapping detaches the
    original socket object, so shutting that one down would fail mid-handshake).

    Close it with its connection: the peer sees the connection end only once every
    descriptor of the socket is closed."""

    __slots__ = ("_lock", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock.dup()
        self._lock = threading.Lock()  # a cut never meets a close (and a reused descriptor)

    def cut(self) -> None:
        # OSError: already closed, or the peer already hung up.
        with self._lock, contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            self._sock.close()


class Watch:
    """One send in flight: its deadline (monotonic), the cutter of its connection once it
    has one, and whether the watchdog cut it."""

    __slots__ = ("cutter", "deadline", "expired")

    def __init__(self, deadline: float, cutter: Cutter | None) -> None:
        self.deadline = deadline
        self.cutter = cutter
        self.expired = False


class Watchdog:
    """Cuts the sends that outlive their limit. Shared by the transports of one process.
    Its thread starts with the first send (so after a fork, in the process that sends) and
    stops on `close` (a later send starts it again).

    No lock on a send's path: adding to and discarding from a set are atomic under the
    GIL, and the watchdog works on a copy. (With a lock taken three times a send, 16
    delivery threads cost 2.9 µs a send in bench/send_deadline.py.) A watch the watchdog
    copied just before it was stopped may still be cut: its send is over, and a kept HTTP
    connection cut that way fails its next request before anything is sent, which the
    transport retries on a new connection as it does when a server closed it."""

    def __init__(self, tick_seconds: float = WATCHDOG_TICK_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tick_seconds = tick_seconds
        self.clock = clock
        self._lock = threading.Lock()  # starts and stops the thread
        self._watches: set[Watch] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, limit_seconds: float, cutter: Cutter | None = None) -> Watch:
        """Watch a send that starts now and must end within `limit_seconds`, on the
        connection of `cutter` if it already has one."""
        watch = Watch(self.clock() + limit_seconds - self.tick_seconds, cutter)
        self._watches.add(watch)
        if self._thread is None:
            self._start_thread()
        return watch

    def guard(self, watch: Watch, cutter: Cutter) -> None:
        """The send's connection, once it exists (cut at once if the send is already late:
        the watchdog may have marked it before the cutter was there)."""
        watch.cutter = cutter
        if watch.expired:
            cutter.cut()

    def stop(self, watch: Watch) -> bool:
        """The send ended; True if the watchdog cut it (its connection must not be reused)."""
        self._watches.discard(watch)
        return watch.expired

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            stop = self._stop
        if thread is not None:
            stop.set()
            thread.join()

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self._stop,),
                                            name="send-watchdog", daemon=True)
            self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.tick_seconds):
            now = self.clock()
            try:
                watches = list(self._watches)
            except RuntimeError:  # changed during the copy (a finalizer let a thread in)
                continue
            for watch in watches:
                if now >= watch.deadline and not watch.expired:
                    watch.expired = True
                    cutter = watch.cutter
                    if cutter is not None:
                        cutter.cut()
