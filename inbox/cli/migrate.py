"""`inbox migrate`: apply the migrations (the Procfile's release line)."""

from __future__ import annotations

import argparse

from inbox.config import Settings

EXIT_OK = 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Apply pending migrations (the Procfile's release phase)."""
    from inbox.cli.dev import database_url
    from inbox.migrations import migrate

    applied = migrate(database_url(settings), handler_modules=settings.handler_modules)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("migrate", help="apply database migrations")
    parser.set_defaults(func=run)
