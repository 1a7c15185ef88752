"""What every benchmark needs: tools, a durable throwaway PostgreSQL, child processes.

Every process a benchmark starts runs in its own process group and is stopped (the whole
group) in a `finally`, so an interrupted benchmark leaves no gunicorn, worker or
PostgreSQL behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from inbox.cli.dev import procfile_commands
from inbox.migrations import migrate
from inbox.throwaway import Cluster

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
BENCH_SECRET = "whsec_bench_secret_not_a_real_one"
BOOT_DEADLINE_SECONDS = 60
STOP_GRACE_SECONDS = 20

# Durable settings, unlike the tests' cluster (fsync=off): a benchmark that does not pay
# for the WAL flush at commit measures a database nobody runs. fsync, synchronous_commit
# and full_page_writes stay on (PostgreSQL's defaults); the rest is ordinary sizing for a
# 24 GiB machine, as a managed PostgreSQL of that size would have.
DURABLE_SETTINGS = (
    "-c fsync=on -c synchronous_commit=on -c full_page_writes=on "
    "-c shared_buffers=1GB -c max_connections=300 -c max_wal_size=4GB "
    "-c checkpoint_timeout=15min -c work_mem=16MB"
)

# System tools: name -> Debian package.
SYSTEM_TOOLS = {"wrk": "wrk", "pgbench": "postgresql"}
# Python modules of the `bench` extra.
BENCH_MODULES = ("pgqueuer", "procrastinate", "asyncpg")


def ensure_tools(tools: Sequence[str] = ("wrk", "pgbench")) -> None:
    """Install missing system tools (apt, as root) and the `bench` extra (pip, at the
    versions requirements-dev.txt pins, beside the tests' and the deploy's)."""
    missing = [SYSTEM_TOOLS[tool] for tool in tools if not find_tool(tool)]
    if missing:
        apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "apt-get"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*apt, "update", "-qq"], check=True, env=env)
        subprocess.run([*apt, "install", "-y", "-qq", *sorted(set(missing))], check=True,
                       env=env)
    py_spy = Path(sys.executable).parent / "py-spy"
    if any(importlib.util.find_spec(name) is None for name in BENCH_MODULES) or \
            not py_spy.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--constraint",
                        str(REPO / "requirements-dev.txt"), "-e", f"{REPO}[bench]"],
                       check=True)
        subprocess.run([sys.executable, "-m", "pip", "check"], check=True)


def find_tool(name: str) -> str | None:
    """A system tool in PostgreSQL's bin folders (newest first) or on PATH."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return shutil.which(name)


@contextlib.contextmanager
def postgres(extra_settings: str = "") -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster with durable settings, stopped afterwards."""
    cluster = Cluster(postgres_args=f"-h 127.0.0.1 {DURABLE_SETTINGS} {extra_settings}")
    try:
        yield cluster
    finally:
        cluster.stop()


def fresh_database(cluster: Cluster, name: str, *, migrated: bool = True) -> str:
    """Create database `name` (dropping an older one) and return its URL."""
    with psycopg.connect(cluster.url(database="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = cluster.url(database=name)
    if migrated:
        migrate(url)
    return url


def scalar(url: str, sql: str, params: Sequence[object] = ()) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def execute(url: str, sql: str, params: Sequence[object] = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, params)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_line(name: str) -> list[str]:
    """The Procfile's `name:` command as argv (read as `inbox dev` reads it)."""
    command = procfile_commands(REPO / "Procfile").get(name)
    if command is None:
        raise RuntimeError(f"no {name}: line in the Procfile")
    return shlex.split(command)


# gunicorn's optional C HTTP parser, for `ingest --parsers` only. `gunicorn[fast]` of the
# pinned gunicorn (27.0.1) asks for gunicorn_h1c >= 0.6.14, which PyPI does not have (0.6.10
# is its newest): the extra cannot be installed, so the benchmark installs the newest
# gunicorn_h1c on its own, outside the virtualenv (the tests keep the Python parser).
H1C_VERSION = "0.6.10"


def h1c_path() -> Path:
    """A folder holding gunicorn_h1c, for the PYTHONPATH of the servers that use it."""
    target = REPO / ".cache" / "bench" / f"gunicorn_h1c-{H1C_VERSION}"
    if not (target / ".complete").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(target), f"gunicorn_h1c=={H1C_VERSION}"], check=True)
        (target / ".complete").touch()
    return target


def venv_env(**extra: str) -> dict[str, str]:
    """The environment for a child: this virtualenv's bin first on PATH, plus `extra`."""
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO), **extra}


class Process:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str], name: str) -> None:
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(list(argv), cwd=REPO, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the group, then SIGKILL it if it has not exited in time."""
        if self.alive():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        # Whatever is left in the group (a gunicorn worker, a grandchild) goes too.
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        with contextlib.suppress(OSError):
            self.log.unlink()


@contextlib.contextmanager
def running(argv: Sequence[str], *, env: dict[str, str], name: str) -> Iterator[Process]:
    process = Process(argv, env=env, name=name)
    try:
        yield process
    finally:
        process.stop()


def wait_http(url: str, process: Process, deadline_seconds: float = BOOT_DEADLINE_SECONDS) -> None:
    """Wait until GET `url` answers 200, or fail with the process's log."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited during start-up:\n{process.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not answer {url} in time:\n{process.tail()}")


def wait_until(predicate, *, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@dataclass
class Throughput:
    """What one contender (ours, a ceiling, a peer) got through in how long."""

    name: str
    setting: str
    count: int  # events drained, messages delivered
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def median_p90_max(times: Sequence[float]) -> list[float]:
    """The median, 90th percentile and maximum of some timings (ms), as the benchmarks of
    pages and scrapes report them."""
    ordered = sorted(times)
    return [statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.9) - 1)],
            ordered[-1]]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (it reads fine in a terminal too)."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
              for row in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# -- CPU accounting ----------------------------------------------------------------------
# On a shared machine wall-clock rates swing with the neighbours' load; the CPU time a
# request or an event costs (our processes plus PostgreSQL's) swings much less, and says
# what the rate would be on an idle machine: cores / CPU seconds per item.

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (after the command name, which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root` and its live descendants, reaped children included.

    utime + stime + cutime + cstime of each live process in the tree: a child that exited
    and was waited for has its time in its parent's cutime/cstime.
    """
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parents[int(entry.name)] = int(fields[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    ticks = 0
    for pid in tree:
        fields = _stat_fields(pid)
        if fields:
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS_PER_SECOND


class CpuMeter:
    """CPU seconds used by named process trees between start() and stop()."""

    def __init__(self, **roots: int) -> None:
        self.roots = roots
        self.used: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._before = {name: tree_cpu_seconds(pid) for name, pid in self.roots.items()}
        return self

    def stop(self) -> dict[str, float]:
        self.used = {name: tree_cpu_seconds(pid) - self._before[name]
                     for name, pid in self.roots.items()}
        return self.used


def postmaster_pid(cluster: Cluster) -> int:
    return cluster.child_process.pid
