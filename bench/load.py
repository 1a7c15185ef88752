"""Signed Stripe requests, written for wrk, and one wrk run read back as numbers.

The requests are made before the run (unique event ids, fresh timestamps, the signature
computed here), so the load generator only copies bytes: wrk with a Lua script that
replays them (bench/replay.lua) at a fixed number of connections.
"""

from __future__ import annotations

import json
import resource
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import BENCH_DIR, BENCH_SECRET, find_tool
from inbox.fixtures import stripe_event_bytes, stripe_event_types
from inbox.providers.stripe import sign

ID_PLACEHOLDER = "evt_BENCH_ID_PLACEHOLDER"


def stripe_templates() -> list[bytes]:
    """The nine fixture events (the package's, inbox/fixtures/stripe/, in file-name order),
    compact JSON (about 3 KB each), with an id placeholder."""
    templates = []
    for event_type in sorted(stripe_event_types()):
        event = json.loads(stripe_event_bytes(event_type))
        event["id"] = ID_PLACEHOLDER
        templates.append(json.dumps(event, separators=(",", ":")).encode())
    return templates


def stripe_bodies(count: int, tag: str) -> Iterator[bytes]:
    """`count` distinct event bodies: the fixtures in turn, each with a unique id."""
    templates = stripe_templates()
    placeholder = ID_PLACEHOLDER.encode()
    for number in range(count):
        unique = f"evt_bench_{tag}_{number:012d}".encode()
        yield templates[number % len(templates)].replace(placeholder, unique, 1)


def raw_request(body: bytes, host: str, path: str = "/webhooks/stripe",
                secret: str = BENCH_SECRET) -> bytes:
    """An HTTP/1.1 keep-alive POST as Stripe sends it, signed now."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Stripe-Signature: {sign(body, secret, int(time.time()))}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class RequestFiles:
    """Per-thread request files for replay.lua, removed with `cleanup()`."""

    prefix: Path
    threads: int
    count: int
    mean_body_bytes: float

    def cleanup(self) -> None:
        for index in range(self.threads):
            Path(f"{self.prefix}.{index}").unlink(missing_ok=True)
        self.prefix.parent.rmdir()


def write_requests(count: int, *, threads: int, host: str, tag: str) -> RequestFiles:
    """Write `count` signed Stripe requests, dealt round-robin into one file per wrk thread."""
    bodies = stripe_bodies(count, tag)
    return write_raw_requests(((raw_request(body, host), len(body)) for body in bodies),
                              threads=threads)


def write_raw_requests(requests: Iterable[tuple[bytes, int]], *, threads: int) -> RequestFiles:
    """Write (raw request, body length) pairs round-robin into one file per wrk thread."""
    folder = Path(tempfile.mkdtemp(prefix="bench-requests-"))
    prefix = folder / "requests"
    outs = [open(f"{prefix}.{index}", "wb") for index in range(threads)]  # noqa: SIM115
    total_body = 0
    count = 0
    try:
        for count, (request, body_length) in enumerate(requests, start=1):
            total_body += body_length
            out = outs[count % threads]
            out.write(b"%d\n" % len(request))
            out.write(request)
    finally:
        for out in outs:
            out.close()
    return RequestFiles(prefix, threads, count, total_body / max(count, 1))


@dataclass
class WrkResult:
    """One wrk run: throughput, latency and answers."""

    seconds: float
    requests: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    wraps: int
    wrk_cpu_share: float  # of one core: shows whether the generator could be the limit
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    @property
    def errors(self) -> int:
        """Non-2xx answers plus socket errors plus timeouts."""
        return self.non_2xx + sum(self.socket_errors.values())


def run_wrk(url: str, files: RequestFiles, *, connections: int, seconds: float,
            timeout_seconds: float = 10.0) -> WrkResult:
    """Replay `files` against `url` for `seconds` with wrk at `connections`."""
    wrk = find_tool("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (bench.harness.ensure_tools installs it)")
    argv = [wrk, "-t", str(files.threads), "-c", str(connections), "-d", f"{seconds:g}s",
            "--timeout", f"{timeout_seconds:g}s", "-s", str(BENCH_DIR / "replay.lua"), url,
            "--", str(files.prefix)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    errors = data["errors"]
    return WrkResult(
        seconds=data["duration_us"] / 1e6,
        requests=data["requests"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        statuses=data["statuses"],
        socket_errors={k: v for k, v in errors.items() if k != "status" and v},
        wraps=data["wraps"],
        wrk_cpu_share=cpu / wall if wall else 0.0,
    )
