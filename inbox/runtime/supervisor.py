"""The supervisor: forks the runner's children, restarts them, stops them.

`run(specs)` is how the worker and the relay start their loops:

- forks `concurrency` children per LoopSpec; each runs `runner.run_loop` (`_child_main`);
- restarts a child that dies (at once, then with a doubling delay while it keeps dying soon
  after its start);
- kills a child busy on one item past `busy_limit_seconds` + WATCHDOG_GRACE_SECONDS (the
  children write "busy since" into a shared Heartbeat);
- first SIGTERM: closes the stop pipe (every child finishes the item in hand and exits 0),
  waits up to SHUTDOWN_GRACE_SECONDS; a second SIGTERM or SIGINT sends SIGINT to every
  child (exit at once, transactions rolled back).

Heroku sends SIGTERM to every process of a dyno: a child counts its own SIGTERM and the
closed stop pipe as one stop, so only a second signal makes it exit at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from inbox.runtime.runner import ProcessControl, run_loop
from inbox.runtime.spec import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SHUTDOWN_TIMEOUT,
    Heartbeat,
    LoopSpec,
    ignore_stop_signals,
)

log = logging.getLogger(__name__)

# Heroku sends SIGKILL 30 s after SIGTERM; stop well before it.
SHUTDOWN_GRACE_SECONDS = 25.0
IMMEDIATE_GRACE_SECONDS = 5.0
# A child busy on one item longer than its budget plus this is killed by the supervisor.
WATCHDOG_GRACE_SECONDS = 5.0
RESTART_DELAY_MAX_SECONDS = 5.0
# A child that dies sooner than this after its start is restarted with a growing delay.
QUICK_DEATH_SECONDS = 10.0
SUPERVISOR_TICK_SECONDS = 0.05


def run(specs: Sequence[LoopSpec]) -> int:
    """Run the loops under a supervisor until SIGTERM/SIGINT; the process's exit code."""
    return Supervisor(specs).run()


@dataclass
class _Slot:
    spec: LoopSpec
    index: int  # position in the heartbeat
    pid: int | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0


@dataclass
class Supervisor:
    """Forks, watches and stops the children of one or more loops."""

    specs: Sequence[LoopSpec]
    slots: list[_Slot] = field(default_factory=list)
    stopping: bool = False
    immediate: bool = False
    deadline: float = 0.0
    exit_code: int = EXIT_OK

    def run(self) -> int:
        self.slots = [
            _Slot(spec, 0) for spec in self.specs for _ in range(max(spec.concurrency, 1))
        ]
        for index, slot in enumerate(self.slots):
            slot.index = index
        self.heartbeat = Heartbeat(len(self.slots))
        self.stop_r, self.stop_w = os.pipe()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigint)
        names = ", ".join(f"{s.name} x{max(s.concurrency, 1)}" for s in self.specs)
        log.info("supervisor %d starting %s", os.getpid(), names)
        for slot in self.slots:
            self._spawn(slot)
        while any(slot.pid is not None for slot in self.slots) or not self.stopping:
            self._reap()
            now = time.monotonic()
            if self.stopping:
                if now > self.deadline:
                    self._kill_all(signal.SIGKILL)
                    if not self.immediate:
                        self.exit_code = EXIT_SHUTDOWN_TIMEOUT
            else:
                self._restart_due(now)
                self._watchdog(now)
            time.sleep(SUPERVISOR_TICK_SECONDS)
        log.info("supervisor %d exiting with %d", os.getpid(), self.exit_code)
        return self.exit_code

    # -- signals ---------------------------------------------------------------------------

    def _on_sigterm(self, signum: int, frame: object) -> None:
        if self.stopping:
            self._on_sigint(signum, frame)
            return
        log.info("SIGTERM: finishing the work in hand, then exiting")
        self.stopping = True
        self.deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        os.close(self.stop_w)  # every child reads EOF: stop claiming

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self.immediate:
            return
        log.info("exiting at once: rolling back the work in hand")
        if not self.stopping:
            os.close(self.stop_w)
        self.stopping = self.immediate = True
        self.exit_code = EXIT_INTERRUPTED
        self.deadline = time.monotonic() + IMMEDIATE_GRACE_SECONDS
        self._kill_all(signal.SIGINT)

    # -- children --------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        self.heartbeat.set(slot.index, 0.0)
        self.heartbeat.set_waiting(slot.index, False)
        elders = [s.index for s in self.slots if s.spec is slot.spec and s.index < slot.index]
        blocked = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            pid = os.fork()
            if pid == 0:  # the child: never returns
                code = EXIT_FAILURE
                try:
                    os.close(self.stop_w)
                    code = _child_main(slot.spec, self.stop_r, self.heartbeat, slot.index,
                                       elders)
                except BaseException:
                    log.exception("%s child crashed", slot.spec.name)
                finally:
                    logging.shutdown()
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        slot.pid = pid
        slot.started_at = time.monotonic()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = None
            self.heartbeat.set_waiting(slot.index, False)  # its siblings answer wake-ups now
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                if code not in (EXIT_OK, EXIT_INTERRUPTED) and not self.immediate:
                    log.warning("%s child %d exited with %d while stopping", slot.spec.name,
                                pid, code)
                continue
            lived = time.monotonic() - slot.started_at
            slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
            delay = 0.0
            if slot.quick_deaths > 1:
                delay = min(RESTART_DELAY_MAX_SECONDS, 0.1 * 2 ** (slot.quick_deaths - 2))
            slot.restart_at = time.monotonic() + delay
            log.error("%s child %d died (exit %d); restarting in %.1fs", slot.spec.name, pid,
                      code, delay)

    def _restart_due(self, now: float) -> None:
        for slot in self.slots:
            if slot.pid is None and now >= slot.restart_at:
                self._spawn(slot)

    def _watchdog(self, now: float) -> None:
        for slot in self.slots:
            limit = slot.spec.busy_limit_seconds
            since = self.heartbeat.get(slot.index)
            if slot.pid is None or not limit or not since:
                continue
            if now - since > limit + WATCHDOG_GRACE_SECONDS:
                log.error("%s child %d stuck on one item for %.0fs: killing it",
                          slot.spec.name, slot.pid, now - since)
                self.heartbeat.set(slot.index, 0.0)
                _kill(slot.pid, signal.SIGKILL)

    def _kill_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.pid is not None:
                _kill(slot.pid, signum)


def _child_main(spec: LoopSpec, stop_fd: int, heartbeat: Heartbeat, slot: int,
                elders: Sequence[int]) -> int:
    control = ProcessControl(stop_fd, heartbeat, slot, elders)
    terms = 0

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal terms
        terms += 1
        if terms == 1:
            control.request_stop()
        else:
            ignore_stop_signals()
            raise KeyboardInterrupt

    def on_sigint(signum: int, frame: object) -> None:
        ignore_stop_signals()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigint)
    signal.set_wakeup_fd(control.wake_w, warn_on_full_buffer=False)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    log.info("%s child %d ready", spec.name, os.getpid())
    return run_loop(spec, control)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
