"""The machine and the versions a run was measured with, for RESULTS.md."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

from bench.harness import find_tool


def proc_line(path: str, prefix: str) -> str | None:
    """The first line of /proc file `path` that starts with `prefix`."""
    try:
        with open(path, encoding="utf-8") as lines:
            return next((line for line in lines if line.startswith(prefix)), None)
    except OSError:
        return None


def cpu_model() -> str:
    line = proc_line("/proc/cpuinfo", "model name")
    return line.split(":", 1)[1].strip() if line else platform.processor() or "unknown"


def memory_gib() -> float:
    line = proc_line("/proc/meminfo", "MemTotal:")
    return int(line.split()[1]) / 1024 / 1024 if line else 0.0


def postgres_version() -> str:
    from inbox.throwaway import postgres_bindir

    try:
        done = subprocess.run([str(postgres_bindir() / "postgres"), "--version"],
                              capture_output=True, text=True, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def tool_version(name: str, flag: str = "--version") -> str:
    path = find_tool(name)
    if path is None:
        return "not installed"
    done = subprocess.run([path, flag], capture_output=True, text=True)
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) \
        else "unknown"


def package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def describe() -> str:
    """A Markdown block: machine, load when the run started, versions."""
    packages = ", ".join(f"{name} {package(name)}" for name in
                         ("gunicorn", "flask", "psycopg", "psycopg-pool", "stripe",
                          "pgqueuer", "procrastinate", "asyncpg"))
    return "\n".join([
        f"- Machine: {os.cpu_count()} cores ({cpu_model()}), {memory_gib():.1f} GiB memory, "
        f"{platform.system()} {platform.release()}; load average at the start: "
        f"{load_average()}",
        f"- Python {platform.python_version()}; {postgres_version()}; "
        f"{tool_version('pgbench')}; {tool_version('wrk', '-v')}",
        f"- Packages: {packages}",
        "- PostgreSQL: a throwaway cluster with fsync=on, synchronous_commit=on, "
        "full_page_writes=on, shared_buffers=1GB, max_wal_size=4GB (bench/harness.py)",
    ])
