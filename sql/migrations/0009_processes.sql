-- Liveness: every worker and relay process (and each web process) records a heartbeat
-- here once per poll interval: who it is, where it runs, since when, when it was last
-- seen, and what it holds. A process that stops beating for three of its intervals is
-- reported gone by `inbox status`, /metrics and the console. Rows of processes gone for a
-- day are forgotten by the beats of the living.
CREATE TABLE inbox_processes (
    name          text        PRIMARY KEY,   -- <dyno or host>:<kind>:<pid>
    kind          text        NOT NULL,      -- worker | relay | web
    host          text        NOT NULL,      -- the machine (a dyno's hostname)
    dyno          text,                      -- $DYNO on Heroku (worker.1)
    pid           integer     NOT NULL,
    backend_pid   integer,                   -- its database connection (leases name it)
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    beat_seconds  float8      NOT NULL,      -- its interval between beats
    holding       integer     NOT NULL DEFAULT 0  -- rows it had leased at its last beat
);
