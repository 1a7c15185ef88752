"""The `inbox` command: one subcommand per process type or operator task.

Settings are read from the environment here, once, and passed down.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from inbox.config import ConfigError, Settings
from inbox.errors import InboxError
from inbox.logs import configure_logging

EXIT_FAILURE = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace, Settings], int]

# `inbox X` lives in inbox/cli/X.py (`send-test-event` in send_test_event.py), which adds its
# subcommand (`add_parser`) and implements it; the process types hand over to their rooms
# (inbox/worker/, inbox/relay/). In the order `inbox --help` lists them.
COMMANDS = ("migrate", "relay", "worker", "status", "replay", "dev", "send_test_event", "events",
            "prune", "psql", "reconcile", "stripe_ips")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"inbox.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(log_format=settings.log_format)
        func: Command = args.func
        return func(args, settings)
    except ConfigError as exc:
        print(f"inbox: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InboxError as exc:
        print(f"inbox: {exc}", file=sys.stderr)
        return EXIT_FAILURE
