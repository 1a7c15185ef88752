"""The `inbox` command: one subcommand per process type or operator task.

Settings are read from the environment here, once, and passed down.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from inbox.config import ConfigError, Settings
from inbox.errors import InboxError
from inbox.logs import configure_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace, Settings], int]


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations (the Procfile's release phase)."""
    from inbox.dev import database_url
    from inbox.migrations import migrate

    applied = migrate(database_url(settings))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return EXIT_OK


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    """Run everything locally, on an embedded PostgreSQL unless DATABASE_URL is set."""
    from inbox.dev import run_dev

    return run_dev(settings, port=args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inbox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    dev = sub.add_parser("dev", help="run web, worker and relay on a local database")
    dev.add_argument("--port", type=int, default=5000, help="receiver port (default 5000)")
    dev.set_defaults(func=cmd_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        settings = Settings.from_env()
        func: Command = args.func
        return func(args, settings)
    except ConfigError as exc:
        print(f"inbox: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InboxError as exc:
        print(f"inbox: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
