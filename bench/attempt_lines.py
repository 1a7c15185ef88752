"""What the worker's per-attempt log lines cost the drain: `python -m bench.attempt_lines
[--events 20000] [--concurrency 2] [--rounds 2]`.

The drain benchmark's worker (bench/drain.py: inbox_worker, no-op handlers with one outbox
message each) on copies of one seeded backlog, in turns: attempt lines off (the logger at
WARNING), text lines (the default), JSON lines; each round runs the three in that order.
Figures in docs/decisions.md, "Structured log lines, one logging call per batch".
"""

from __future__ import annotations

import argparse

from bench.drain import copy_of_seed, inbox_worker, seed_template
from bench.harness import postgres

VARIANTS = {
    "no attempt lines": {"handlers": "bench.noop_handlers,bench.quiet_attempts"},
    "text lines": {"handlers": "bench.noop_handlers", "INBOX_LOG_FORMAT": "text"},
    "json lines": {"handlers": "bench.noop_handlers", "INBOX_LOG_FORMAT": "json"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with postgres() as cluster:
        seed_template(cluster, args.events)
        for _ in range(args.rounds):
            for name, options in VARIANTS.items():
                url = copy_of_seed(cluster, "bench_attempt_lines")
                drained = inbox_worker(url, args.concurrency, args.events, **options)
                rates[name].append(drained.rate)
                print(f"{name}: {drained.rate:,.0f} events/s", flush=True)
    for name, values in rates.items():
        print(f"{name}: " + ", ".join(f"{rate:,.0f}" for rate in values) + " events/s")


if __name__ == "__main__":
    main()
