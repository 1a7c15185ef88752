"""Liveness: heartbeats recorded, what a process holds, and a silent process reported gone."""

from __future__ import annotations

import dataclasses

from inbox.store import processes, system_state


def test_a_beat_records_the_process_and_what_it_holds(db):
    me = processes.Identity("worker", "host-a", "worker.1", 4242)
    processes.beat(db, me, 1.0)
    db.execute("INSERT INTO inbox (provider, event_id, event_type, payload, raw_body,"
               " next_attempt_at, locked_backend, locked_at) SELECT 'stripe', 'evt_' || n,"
               " 't', '{}', '', 'infinity', pg_backend_pid(), now()"
               " FROM generate_series(1, 3) n")
    processes.beat(db, me, 1.0)

    [row] = processes.list_processes(db)
    assert (row.name, row.kind, row.host, row.dyno, row.pid) == (
        "worker.1:worker:4242", "worker", "host-a", "worker.1", 4242)
    assert row.alive and row.holding == 3 and row.started_at <= row.last_seen_at
    assert processes.alive_by_kind([row]) == {"worker": 1, "relay": 0, "web": 0}


def test_a_silent_process_is_gone_and_a_goodbye_forgets_it(db):
    relay = processes.Identity("relay", "host-b", None, 7)
    web = processes.Identity("web", "host-b", None, 8)
    processes.beat(db, relay, 1.0)
    processes.beat(db, web, 1.0)
    db.execute("UPDATE inbox_processes SET last_seen_at = now() - interval '11 seconds'"
               " WHERE kind = 'relay'")

    state = system_state.read(db)
    by_name = {p.name: p for p in state.processes}
    assert by_name["host-b:relay:7"].alive is False
    assert by_name["host-b:web:8"].alive is True
    assert state.processes[0].alive  # the living first

    processes.gone(db, web)
    assert [p.name for p in processes.list_processes(db)] == ["host-b:relay:7"]
    # A day later the silent one is forgotten by the next beat of anyone.
    db.execute("UPDATE inbox_processes SET last_seen_at = now() - interval '25 hours'")
    processes.beat(db, dataclasses.replace(web, pid=9), 1.0)
    assert [p.name for p in processes.list_processes(db)] == ["host-b:web:9"]
