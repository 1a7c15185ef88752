"""`inbox relay`: deliver outbox messages (the Procfile's relay line; inbox/relay/)."""

from __future__ import annotations

import argparse

from inbox.config import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Deliver outbox messages by INBOX_ROUTES until SIGTERM (the Procfile's relay line)."""
    from inbox.relay.loop import run_relay

    return run_relay(settings, concurrency=args.concurrency, processes=args.processes)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("relay", help="deliver outbox messages (HTTP, SMTP, log)")
    parser.add_argument(
        "--concurrency", type=int, default=None, metavar="N",
        help="delivery threads per process (default INBOX_RELAY_CONCURRENCY or 32)",
    )
    parser.add_argument("--processes", type=int, default=1, metavar="P",
                        help="relay processes (default 1)")
    parser.set_defaults(func=run)
