"""Where a receiver request spends its time: py-spy on the gunicorn workers under load.

`python -m bench ingest --profile` samples every gunicorn worker during the receiver's
first measured run and prints the share of a request's time under each part of the
receiver: samples of threads holding the GIL (Python running: what limits throughput on 2
cores), or with `--profile-idle` every sample (so time waiting on PostgreSQL shows).
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Buckets, by a substring of a frame ("function (file)"): the first match from the leaf
# upwards names the bucket, so a psycopg call inside the pool check counts as the check.
BUCKETS = (
    ("pool: check_connection (round trip before each request)", "check_connection"),
    ("pool: getconn/putconn", "psycopg_pool/pool.py"),
    ("wake-up: asking the notifier thread for a NOTIFY", "WakeNotifier.wake"),
    ("database: inbox_insert (group commit: execute, commit wait, queue)", "GroupCommit"),
    ("signature check (HMAC and header rules)", "providers/stripe.py"),
    ("JSON parse of the body", "parse_json_object"),
    ("request log line", "logging/__init__.py"),
    ("reading the body", "_read_body"),
    ("werkzeug helpers (headers, input stream)", "werkzeug/"),
    ("gunicorn worker (parse, send, accept)", "gunicorn/"),
)


TOP_FUNCTIONS = 15


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed (pip install -e '.[bench]')")
    return found


def start(pid: int, seconds: float, idle: bool = False) -> tuple[subprocess.Popen, Path]:
    """Record the gunicorn master `pid` and its workers for `seconds` (raw stacks)."""
    out = Path(tempfile.mkstemp(prefix="bench-profile-", suffix=".txt")[1])
    argv = [py_spy(), "record", "--pid", str(pid), "--subprocesses",
            # --gil: only samples of threads holding the GIL, i.e. running Python (waits on
            # the socket release it); --idle: every sample, waits included.
            *(["--idle"] if idle else ["--gil"]), "--duration", str(int(seconds)),
            "--rate", "250",
            "--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out


def summarize(path: Path) -> str:
    """A table of the share of worker samples under each bucket of a request."""
    inclusive: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    request_samples = 0
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        if not any("handle_request" in f or "handle (" in f for f in frames):
            continue
        if not any("WebhookRoute.__call__" in f for f in frames):
            continue
        request_samples += count
        for frame in set(frames):
            functions[frame.split(":")[0]] += count
        for label, needle in BUCKETS:
            if any(needle in frame for frame in frames):
                inclusive[label] += count
                break
        else:
            inclusive["other"] += count
    if not request_samples:
        return "py-spy recorded no request samples."
    lines = ["| part of a request | share of request time |", "| --- | --- |"]
    for label, count in inclusive.most_common():
        lines.append(f"| {label} | {count / request_samples:.0%} |")
    lines.append(f"\n{request_samples:,} of {total:,} samples were inside the webhook route.")
    # The heaviest functions, leaving out the wrappers every request passes through.
    top = [(name, n) for name, n in functions.most_common()
           if n < 0.9 * request_samples][:TOP_FUNCTIONS]
    lines += ["", "| function (inclusive) | share of request time |", "| --- | --- |"]
    lines += [f"| `{name}` | {n / request_samples:.0%} |" for name, n in top]
    return "\n".join(lines)


def finish(process: subprocess.Popen, out: Path) -> str:
    try:
        process.wait(timeout=120)
        return summarize(out)
    finally:
        if process.poll() is None:
            process.kill()
        out.unlink(missing_ok=True)
