"""ingest: signed Stripe events POSTed to the Procfile's `web` line, beside bare Flask.

Both servers run the same gunicorn command and configuration (the Procfile's, with the
same worker overrides); only the WSGI app differs. They run side by side and wrk replays
pre-signed requests at a fixed number of connections to each in turn, round after round,
so a neighbour's noise falls on both. Target: >= 0.5x the bare endpoint, p99 <= 30 ms, no
non-2xx. `--sweep` measures worker classes and counts (the table behind
inbox/gunicorn_conf.py); `--variants` measures proposed receiver changes
(bench/receiver_variants.py); `--profile` samples the receiver with py-spy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg

from bench import profile
from bench.bare_app import GUNICORN_APP as BARE_APP
from bench.harness import (
    BENCH_SECRET,
    CpuMeter,
    ensure_tools,
    free_port,
    fresh_database,
    h1c_path,
    postgres,
    postmaster_pid,
    procfile_line,
    running,
    table,
    venv_env,
    wait_http,
)
from bench.load import WrkResult, run_wrk, write_requests
from bench.receiver_variants import VARIANTS
from bench.report import Report

RECEIVER_APP = "inbox.web:create_app()"
WARMUP_SECONDS = 2.0
# Requests written per second of a run: above what the receiver takes here, so a run
# does not wrap around to ids already sent (replay.lua counts it if it does).
REQUESTS_PER_SECOND_BOUND = 6000
CEILING_REQUESTS = 20_000  # the bare endpoint ignores ids: a smaller set, replayed in turn
TARGET_RATIO = 0.5
TARGET_P99_MS = 30.0


@dataclass(frozen=True)
class WebConfig:
    """Gunicorn overrides on top of inbox/gunicorn_conf.py (none: the file as it is)."""

    worker_class: str | None = None
    workers: int | None = None
    threads: int | None = None

    @property
    def label(self) -> str:
        if self.worker_class is None and self.workers is None:
            return "gunicorn_conf.py"
        threads = f"x{self.threads}" if self.threads else ""
        return f"{self.worker_class} {self.workers}{threads}"

    def args(self) -> list[str]:
        args = []
        if self.worker_class:
            args += ["--worker-class", self.worker_class]
        if self.workers:
            args += ["--workers", str(self.workers)]
        if self.threads:
            args += ["--threads", str(self.threads)]
        elif self.worker_class == "sync":
            # gunicorn_conf.py sets threads, and gunicorn turns a sync worker with threads
            # into gthread: a sync worker needs its single thread said out loud.
            args += ["--threads", "1"]
        return args


SWEEP = [
    WebConfig("sync", 2), WebConfig("sync", 4),
    WebConfig("gthread", 2, 4), WebConfig("gthread", 2, 8), WebConfig("gthread", 2, 16),
    WebConfig("gthread", 4, 4), WebConfig("gthread", 4, 8),
    WebConfig("gevent", 2),
]


@dataclass
class Server:
    """One gunicorn serving one app under test, and what wrk measured of it."""

    name: str
    app: str
    stores: bool  # the app writes to the database: fresh ids each round, rows counted
    gunicorn_args: tuple[str, ...] = ()  # on top of the WebConfig's (`--parsers`)
    env: dict[str, str] = field(default_factory=dict)
    base: str = ""
    pid: int = 0
    results: list[WrkResult] = field(default_factory=list)
    stored: int = 0
    inserts: int = 0  # transactions that stored them (rows sharing a received_at)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds over all rounds

    def cpu_us_per_request(self, *names: str) -> float:
        requests = sum(r.requests for r in self.results)
        return sum(self.cpu.get(n, 0.0) for n in names) / requests * 1e6 if requests else 0.0

    @property
    def rate(self) -> float:
        seconds = sum(r.seconds for r in self.results)
        return sum(r.requests for r in self.results) / seconds if seconds else 0.0

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(r, attribute) for r in self.results)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.results)


@contextlib.contextmanager
def serve(server: Server, config: WebConfig, database_url: str) -> Iterator[Server]:
    """The Procfile's web command with `server.app` as the app, healthy."""
    argv = procfile_line("web")
    argv = [*argv[:-1], *config.args(), *server.gunicorn_args, server.app]
    port = free_port()
    env = venv_env(PORT=str(port), DATABASE_URL=database_url,
                   STRIPE_WEBHOOK_SECRET=BENCH_SECRET)
    if "PYTHONPATH" in server.env:
        env["PYTHONPATH"] = f"{server.env['PYTHONPATH']}{os.pathsep}{env['PYTHONPATH']}"
    with running(argv, env=env, name="web") as process:
        server.base = f"http://127.0.0.1:{port}"
        server.pid = process.popen.pid
        wait_http(f"{server.base}/healthz", process)
        yield server


def one_run(server: Server, args: argparse.Namespace, *, seconds: float, tag: str,
            database_url: str, postmaster: int) -> WrkResult:
    host = server.base.removeprefix("http://")
    count = int(seconds * REQUESTS_PER_SECOND_BOUND) if server.stores else CEILING_REQUESTS
    files = write_requests(count, threads=args.wrk_threads, host=host, tag=tag)
    try:
        before = stored_rows(database_url) if server.stores else (0, 0)
        meter = CpuMeter(web=server.pid, pg=postmaster).start()
        result = run_wrk(f"{server.base}/webhooks/stripe", files,
                         connections=args.connections, seconds=seconds)
        result.extra["cpu"] = meter.stop()
        if server.stores:
            # Answers still in flight at wrk's deadline land a moment later.
            after = stored_rows(database_url)
            result.extra["stored"] = after[0] - before[0]
            result.extra["inserts"] = after[1] - before[1]
        return result
    finally:
        files.cleanup()


def stored_rows(database_url: str) -> tuple[int, int]:
    """Rows in the inbox, and the transactions that inserted them: the receiver's group
    commit stores the events of one insert with one received_at (the transaction's time)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows, inserts = conn.execute(
            "SELECT count(*), count(DISTINCT received_at) FROM inbox").fetchone()
    return int(rows), int(inserts)


def measure(servers: list[Server], config: WebConfig, args: argparse.Namespace,
            database_url: str, prefix: str, postmaster: int) -> str:
    """Warm every server, then `args.rounds` rounds over all of them; profile if asked."""
    profile_text = ""
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(serve(server, config, database_url if server.stores else ""))
        for number, server in enumerate(servers):
            one_run(server, args, seconds=WARMUP_SECONDS, tag=f"{prefix}w{number}",
                    database_url=database_url, postmaster=postmaster)
        for round_number in range(args.rounds):
            for number, server in enumerate(servers):
                recorder = None
                if args.profile and server.app == RECEIVER_APP and round_number == 0:
                    recorder = profile.start(server.pid, args.seconds, idle=args.profile_idle)
                result = one_run(server, args, seconds=args.seconds,
                                 tag=f"{prefix}r{round_number}s{number}",
                                 database_url=database_url, postmaster=postmaster)
                server.results.append(result)
                for name, seconds in result.extra["cpu"].items():
                    server.cpu[name] = server.cpu.get(name, 0.0) + seconds
                server.stored += int(result.extra.get("stored", 0))
                server.inserts += int(result.extra.get("inserts", 0))
                if recorder is not None:
                    profile_text = profile.finish(*recorder)
    return profile_text


# `--parsers`: gunicorn's pure Python HTTP parser (today's configuration, forced so an
# installed gunicorn_h1c cannot slip in) beside its C parser (`--http-parser fast`, which
# fails rather than fall back), for the receiver and for the bare endpoint.
PYTHON_PARSER = ("--http-parser", "python")
C_PARSER = ("--http-parser", "fast")


def build_servers(args: argparse.Namespace) -> list[Server]:
    """The receiver first, then its variants, then the bare endpoint(s)."""
    if args.parsers:
        c_env = {"PYTHONPATH": str(h1c_path())}
        return [
            Server("receiver", RECEIVER_APP, stores=True, gunicorn_args=PYTHON_PARSER),
            Server("receiver, C parser", RECEIVER_APP, stores=True, gunicorn_args=C_PARSER,
                   env=c_env),
            Server("bare Flask", BARE_APP, stores=False, gunicorn_args=PYTHON_PARSER),
            Server("bare Flask, C parser", BARE_APP, stores=False, gunicorn_args=C_PARSER,
                   env=c_env),
        ]
    servers = [Server("receiver", RECEIVER_APP, stores=True)]
    servers += [Server(f"variant {v}", f'bench.receiver_variants:create_app("{v}")',
                       stores=True) for v in variants(args)]
    servers.append(Server("bare Flask", BARE_APP, stores=False))
    return servers


def bare_of(servers: list[Server]) -> Server:
    """The bare endpoint every ratio is taken against (the first, Python parser)."""
    return next(s for s in servers if s.app == BARE_APP)


def variants(args: argparse.Namespace) -> list[str]:
    """The receiver variants to measure: none, the ones named, or all for a bare flag."""
    if args.variants is None:
        return []
    return list(args.variants) or list(VARIANTS)


HEADERS = ["app", "gunicorn", "req/s", "p50 ms", "p99 ms", "max ms", "non-2xx", "sock err",
           "rows stored", "events/insert", "wrk cpu", "vs bare", "web cpu us/req",
           "pg cpu us/req",
           "cpu vs bare"]


def rows(servers: list[Server], config: WebConfig) -> list[list[object]]:
    bare = bare_of(servers)
    out = []
    for server in servers:
        results = server.results
        out.append([
            server.name, config.label, server.rate, server.median("p50_ms"),
            server.median("p99_ms"), max(r.max_ms for r in results),
            sum(r.non_2xx for r in results), sum(sum(r.socket_errors.values()) for r in results),
            server.stored if server.stores else "-",
            f"{server.stored / server.inserts:.2f}" if server.inserts else "-",
            f"{statistics.mean(r.wrk_cpu_share for r in results):.0%}",
            f"{server.rate / bare.rate:.2f}x" if bare.rate else "-",
            f"{server.cpu_us_per_request('web'):.0f}", f"{server.cpu_us_per_request('pg'):.0f}",
            f"{cpu_ratio(server, bare):.2f}x",
        ])
    return out


def cpu_ratio(server: Server, bare: Server) -> float:
    """Requests per CPU second, ours over the bare endpoint's (web and PostgreSQL CPU)."""
    ours = server.cpu_us_per_request("web", "pg")
    return bare.cpu_us_per_request("web", "pg") / ours if ours else 0.0


def run(args: argparse.Namespace) -> Report:
    ensure_tools(["wrk"])
    configs = SWEEP if args.sweep else [WebConfig()]
    all_rows: list[list[object]] = []
    outcomes: list[tuple[WebConfig, Server, Server]] = []
    profile_text = ""
    with postgres() as cluster:
        for number, config in enumerate(configs):
            url = fresh_database(cluster, "bench_ingest")
            servers = build_servers(args)
            profile_text = measure(servers, config, args, url, prefix=f"c{number}",
                                   postmaster=postmaster_pid(cluster)) or profile_text
            config_rows = rows(servers, config)
            print(table(HEADERS, config_rows), flush=True)
            all_rows += config_rows
            outcomes.append((config, servers[0], bare_of(servers)))
    report = Report(
        "ingest: POST /webhooks/stripe beside bare Flask",
        f"python -m bench ingest --seconds {args.seconds:g} --rounds {args.rounds} "
        f"--connections {args.connections}" + (" --sweep" if args.sweep else "")
        + (" --variants " + " ".join(variants(args)) if variants(args) else "")
        + (" --parsers" if args.parsers else "")
        + (" --profile" if args.profile else ""),
    )
    report.body = table(HEADERS, all_rows)
    report.body += (
        f"\n\nwrk ({args.wrk_threads} threads, {args.connections} connections) replays "
        "pre-signed requests (unique event ids, fresh timestamps, the nine fixture events as "
        f"compact JSON, ~3 KB). Each app runs {args.rounds} x {args.seconds:g} s, in turn "
        f"with the others, after a {WARMUP_SECONDS:g} s warm-up; req/s over all rounds, "
        "p50/p99 the median of the rounds, max the worst. `wrk cpu`: the generator's CPU as "
        "a share of one core. `rows stored` counts answers that landed after wrk's deadline "
        "too; `events/insert`, how many the group commit stored per statement. `web cpu` / "
        "`pg cpu`: CPU time of the gunicorn processes / of PostgreSQL per "
        "request; `cpu vs bare` compares requests per CPU second, which the neighbours' load "
        "moves much less than req/s."
    )
    if any(r.wraps for config, receiver, _ in outcomes for r in receiver.results):
        report.body += "\n\n**Warning**: a receiver run wrapped around (re-sent event ids)."
    if profile_text:
        kind = "wall time, idle included" if args.profile_idle else "samples holding the GIL"
        report.body += f"\n\nProfile of the receiver (py-spy, all gunicorn workers, {kind}):\n\n"
        report.body += profile_text
    config, receiver, bare = max(outcomes, key=lambda o: o[1].rate)
    ratio = receiver.rate / bare.rate if bare.rate else 0.0
    where = f" ({config.label})" if args.sweep else ""
    report.check(f"receiver >= {TARGET_RATIO}x bare Flask", f"{ratio:.2f}x{where}",
                 ratio >= TARGET_RATIO)
    p99 = receiver.median("p99_ms")
    report.check(f"p99 <= {TARGET_P99_MS:g} ms at {args.connections} connections",
                 f"{p99:.1f} ms", p99 <= TARGET_P99_MS)
    report.check("zero non-2xx, no socket errors", str(receiver.errors), receiver.errors == 0)
    return report


FULL = {"seconds": 10.0, "rounds": 3}
QUICK = {"seconds": 4.0, "rounds": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, help="seconds per run (10; --quick 4)")
    parser.add_argument("--rounds", type=int, help="runs per app, alternating (3; --quick 2)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--sweep", action="store_true",
                        help="measure gunicorn worker classes and counts")
    parser.add_argument("--variants", nargs="*", choices=VARIANTS, metavar="VARIANT",
                        help="also measure proposed receiver changes (bench/"
                             f"receiver_variants.py): {', '.join(VARIANTS)}; none named: all")
    parser.add_argument("--parsers", action="store_true",
                        help="gunicorn's Python HTTP parser beside its C parser "
                             "(gunicorn_h1c), for the receiver and the bare endpoint")
    parser.add_argument("--profile", action="store_true",
                        help="sample the receiver with py-spy during its first round")
    parser.add_argument("--profile-idle", action="store_true",
                        help="with --profile: count idle samples too (waits on PostgreSQL)")
