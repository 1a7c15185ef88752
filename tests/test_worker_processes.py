"""Real `inbox worker` processes against real PostgreSQL: concurrency, SIGKILL, poison
events, SIGTERM, NOTIFY, the watchdog.

Every wait has a generous deadline and the assertions are about outcomes (exactly-once
effects, statuses, exit codes), not speed: the machine is shared.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from inbox.queries import query
from inbox.runtime.spec import EXIT_INTERRUPTED, EXIT_OK
from tests.support import wait_for
from tests.worker_support import (
    event_row,
    insert_events,
    kill_group,
    statuses,
)

pytestmark = pytest.mark.slow


def processed(db: psycopg.Connection) -> int:
    return statuses(db).get("processed", 0)


def assert_each_effect_once(db: psycopg.Connection, expected: int) -> None:
    duplicated = db.execute(
        "SELECT event_id, count(*) FROM effects GROUP BY event_id HAVING count(*) > 1"
    ).fetchall()
    assert duplicated == []
    assert db.execute("SELECT count(DISTINCT event_id) FROM effects").fetchone()[0] == expected
    # The effect, its outbox message and the status committed together.
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == expected
    assert db.execute(
        "SELECT count(*) FROM effects e JOIN inbox i USING (event_id)"
        " WHERE i.status <> 'processed'"
    ).fetchone()[0] == 0


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


def test_four_worker_processes_drain_5000_events_each_effect_once(workers, effects):
    insert_events(effects, "effect", 5000)
    worker = workers.start("--concurrency", "4")
    wait_for(lambda: processed(effects) == 5000, timeout=120, what="5000 processed")

    assert stop(worker) == EXIT_OK
    assert statuses(effects) == {"processed": 5000}
    assert_each_effect_once(effects, 5000)
    assert effects.execute("SELECT DISTINCT attempts FROM inbox").fetchall() == [(1,)]
    assert effects.execute("SELECT count(*) FROM inbox_attempts").fetchone()[0] == 5000
    # All four claimed work (each leaves its name on the attempts it made).
    assert effects.execute("SELECT count(DISTINCT worker) FROM inbox_attempts").fetchone()[0] == 4


def test_workers_sigkilled_at_random_lose_nothing_and_do_nothing_twice(workers, effects):
    total = 2000
    insert_events(effects, "effect", total, payload={"sleep": 0.005})
    running = [workers.start("--concurrency", "2") for _ in range(2)]
    rng = random.Random(7)
    kills = 0
    wait_for(lambda: processed(effects) > 50, timeout=60, what="a first batch")
    while kills < 12 and processed(effects) < total:
        time.sleep(rng.uniform(0.1, 0.4))
        victim = rng.choice(running)
        children = workers.children(victim)
        if rng.random() < 0.5 and children:
            kill_target = rng.choice(children)  # one claimer: its supervisor restarts it
            subprocess.run(["kill", "-KILL", str(kill_target)], check=False)
        else:  # the whole dyno: a new one takes its place
            kill_group(victim, signal.SIGKILL)
            victim.wait(timeout=10)
            running.remove(victim)
            running.append(workers.start("--concurrency", "2"))
        kills += 1

    wait_for(lambda: processed(effects) == total, timeout=120, what="all processed")
    assert statuses(effects) == {"processed": total}
    assert_each_effect_once(effects, total)
    crashed = effects.execute("SELECT count(*) FROM inbox WHERE crashes > 0").fetchone()[0]
    assert kills >= 3 and crashed > 0  # the kills did land in the middle of batches
    for process in running:
        assert stop(process) == EXIT_OK


def test_a_poison_event_ends_dead_after_the_limit_and_others_flow(workers, effects):
    [poison] = insert_events(effects, "poison", 1, prefix="poison")
    normal = insert_events(effects, "effect", 300, prefix="normal")
    worker = workers.start("--concurrency", "2", "--batch-size", "16",
                           INBOX_MAX_ATTEMPTS="3")

    wait_for(lambda: event_row(effects, poison)["status"] == "dead", timeout=90,
             what="the poison event dead")
    wait_for(lambda: processed(effects) == len(normal), timeout=90, what="the others processed")

    row = event_row(effects, poison)
    assert (row["attempts"], row["crashes"]) == (3, 3)
    assert row["last_error"].startswith("worker died during attempt 3")
    outcomes = effects.execute(
        "SELECT outcome FROM inbox_attempts a JOIN inbox i ON i.id = a.inbox_id"
        " WHERE i.event_id = %s ORDER BY a.id", [poison]).fetchall()
    assert outcomes == [("crashed",)] * 3
    assert_each_effect_once_of(effects, normal)
    # Once it had crashed, the poison event ran alone: only its first batch-mates paid.
    hit = effects.execute(
        "SELECT count(*) FROM inbox WHERE crashes > 0 AND event_id <> %s", [poison]
    ).fetchone()[0]
    assert hit <= 15
    assert stop(worker) == EXIT_OK


def leased(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM inbox WHERE locked_backend IS NOT NULL"
                      ).fetchone()[0]


def test_the_batch_mates_of_a_worker_killed_in_a_backlog_follow_within_seconds(
    workers, db
):
    """Issue 18: a worker SIGKILLed holding a full batch during a backlog. Another worker,
    with the default backoff and a 30 s poll interval, rescues the batch on its first poll
    tick and processes the 100 batch-mates with the rest of the backlog: well within 20 s,
    where one suspect per poll tick (or a backoff of up to 60 s) could not."""
    insert_events(db, "queue", 1000, prefix="before")
    [stall] = insert_events(db, "stall_once", 1, prefix="stall")
    insert_events(db, "queue", 2000, prefix="after")
    total = 3001
    doomed = workers.start("--concurrency", "1", INBOX_HANDLER_TIMEOUT_SECONDS="600")
    wait_for(lambda: event_row(db, stall)["locked_backend"] is not None, timeout=60,
             what="the worker holding the stalled batch")
    backend = event_row(db, stall)["locked_backend"]
    assert leased(db) == 100  # a full batch, one transaction, stuck in its 2nd handler
    kill_group(doomed, signal.SIGKILL)
    doomed.wait(timeout=10)
    wait_for(lambda: not db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                    [backend]).fetchone(),
             timeout=30, what="the dead worker's backend gone")

    successor = workers.start("--concurrency", "1", INBOX_POLL_INTERVAL_SECONDS="30",
                              INBOX_RETRY_BASE_SECONDS="60", INBOX_RETRY_CAP_SECONDS="3600")
    # Its first loop rescues; had that raced the backend's exit, the next tick is 30 s on.
    wait_for(lambda: db.execute("SELECT count(*) FROM inbox WHERE crashes > 0").fetchone()[0]
             == 100, timeout=90, what="the rescue")
    wait_for(lambda: processed(db) == total, timeout=20,
             what="the backlog and the batch-mates processed, without a poll tick")

    assert statuses(db) == {"processed": total}
    assert db.execute(
        "SELECT DISTINCT attempts, crashes, last_error LIKE '%% holding 100 events'"
        " FROM inbox WHERE crashes > 0").fetchall() == [(2, 1, True)]
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == total - 1
    assert stop(successor) == EXIT_OK


def assert_each_effect_once_of(db: psycopg.Connection, event_ids: list[str]) -> None:
    counts = dict(db.execute(
        "SELECT event_id, count(*) FROM effects WHERE event_id = ANY(%s) GROUP BY event_id",
        [event_ids],
    ).fetchall())
    assert counts == dict.fromkeys(event_ids, 1)


def test_sigterm_mid_drain_exits_0_in_time_and_leaves_nothing_half_done(workers, effects):
    total = 400
    insert_events(effects, "effect", total, payload={"sleep": 0.02})
    worker = workers.start("--concurrency", "2", "--batch-size", "10")
    wait_for(lambda: processed(effects) >= 40, timeout=60, what="the drain under way")

    started = time.monotonic()
    kill_group(worker, signal.SIGTERM)  # as Heroku does: every process of the dyno
    assert worker.wait(timeout=30) == EXIT_OK
    assert time.monotonic() - started < 25  # Heroku's SIGKILL comes at 30 s

    done = processed(effects)
    assert 0 < done < total
    assert_each_effect_once(effects, done)
    # The rest was given back untouched: no lease, no attempt used, no history.
    assert effects.execute(
        "SELECT DISTINCT attempts, locked_backend FROM inbox WHERE status = 'pending'"
    ).fetchall() == [(0, None)]
    assert effects.execute("SELECT count(*) FROM inbox_attempts").fetchone()[0] == done

    successor = workers.start("--concurrency", "2")
    wait_for(lambda: processed(effects) == total, timeout=120, what="the rest processed")
    assert_each_effect_once(effects, total)
    assert effects.execute("SELECT DISTINCT attempts FROM inbox").fetchall() == [(1,)]
    assert stop(successor) == EXIT_OK


def test_a_second_sigterm_exits_at_once_and_rolls_back(workers, effects):
    [event_id] = insert_events(effects, "hang", 1, payload={"sleep": 3600})
    worker = workers.start("--concurrency", "1")
    wait_for(lambda: event_row(effects, event_id)["locked_backend"] is not None, timeout=30,
             what="the handler running")
    wait_for(lambda: effects.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
    ).fetchone()[0], timeout=30, what="the handler's insert done")

    worker.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        worker.wait(timeout=1)  # finishing the event in hand: it sleeps
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == EXIT_INTERRUPTED
    assert time.monotonic() - started < 10

    row = event_row(effects, event_id)
    assert (row["status"], row["attempts"], row["locked_backend"]) == ("pending", 0, None)
    assert effects.execute("SELECT count(*) FROM effects").fetchone()[0] == 0


def test_a_notification_wakes_an_idle_worker_long_before_the_poll(workers, effects):
    insert_events(effects, "effect", 1, prefix="first")
    worker = workers.start("--concurrency", "1", INBOX_POLL_INTERVAL_SECONDS="30")
    wait_for(lambda: processed(effects) == 1, timeout=30, what="the first event")
    time.sleep(0.5)  # the worker is now waiting: LISTEN, or the poll 30 s away

    [quiet] = insert_events(effects, "effect", 1, prefix="quiet")  # no NOTIFY
    time.sleep(1.5)
    assert event_row(effects, quiet)["status"] == "pending"  # polling alone would wait

    effects.execute(query("inbox_insert"), {
        "providers": ["test"], "event_ids": ["loud"], "event_types": ["effect"],
        "payloads": ["{}"], "raw_bodies": [b"{}"], "signatures": [None],
        "sources": [None], "accounts": [None],
    })
    effects.execute(query("inbox_wake_workers"))  # what the receiver sends after the insert
    wait_for(lambda: processed(effects) == 3, timeout=10, what="the notified event")
    assert stop(worker) == EXIT_OK


def test_the_watchdog_replaces_a_child_stuck_in_a_handler(workers, effects):
    [stuck] = insert_events(effects, "hang", 1, prefix="stuck", payload={"sleep": 3600})
    worker = workers.start("--concurrency", "2", INBOX_HANDLER_TIMEOUT_SECONDS="1",
                           INBOX_MAX_ATTEMPTS="1")
    # The server ends the idle transaction after 1 s; the other child rescues the event.
    wait_for(lambda: event_row(effects, stuck)["status"] == "dead", timeout=30,
             what="the stuck event dead")
    assert event_row(effects, stuck)["last_error"].startswith("worker died during attempt 1")
    wait_for(lambda: "stuck on one item" in workers.log_text(), timeout=30,
             what="the watchdog")
    insert_events(effects, "effect", 50, prefix="after")
    wait_for(lambda: processed(effects) == 50, timeout=30, what="work after the watchdog")
    assert stop(worker) == EXIT_OK


def test_children_of_a_dead_supervisor_stop_by_themselves(workers, effects):
    worker = workers.start("--concurrency", "2")
    children = wait_for(lambda: len(workers.children(worker)) == 2 and workers.children(worker),
                        timeout=30, what="two children")
    worker.send_signal(signal.SIGKILL)  # the supervisor alone
    worker.wait(timeout=10)

    def gone(pid: int) -> bool:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        return "State:\tZ" in status

    wait_for(lambda: all(gone(pid) for pid in children), timeout=30, what="orphans gone")
