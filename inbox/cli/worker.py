"""`inbox worker`: run the handlers of due events (the Procfile's worker line;
inbox/worker/).
"""

from __future__ import annotations

import argparse

from inbox.config import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run handlers for due inbox events until SIGTERM (the Procfile's worker line)."""
    from inbox.runtime import supervisor
    from inbox.worker import loop as worker
    from inbox.worker.registry import load_handlers

    registry = load_handlers(settings.handler_modules)  # fails here, before any fork
    spec = worker.loop_spec(
        settings, registry, concurrency=args.concurrency,
        batch_size=args.batch_size or worker.DEFAULT_BATCH_SIZE,
    )
    specs = [spec]
    if args.with_relay:  # small deployments: one dyno runs handlers and deliveries
        from inbox.relay import loop as relay

        specs.append(relay.loop_spec(settings))
    return supervisor.run(specs)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("worker", help="run handlers for due inbox events")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="worker processes (default 1; scale further with more dynos)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="events leased per claim (default 100), processed in one "
                        "transaction per 32 handlers that run SQL (inbox/worker/loop.py)")
    parser.add_argument("--with-relay", action="store_true",
                        help="also run a relay process (one dyno for small deployments)")
    parser.set_defaults(func=run)
