"""`inbox stripe-ips [--update FILE | --reset]`: Stripe's webhook addresses, the ones
STRIPE_WEBHOOK_IP_ALLOWLIST lets deliveries to /webhooks/stripe(-connect) come from.

Without an option it prints the list in use, where it came from and as of when. Stripe
announces a change of its addresses a week ahead; then download
https://stripe.com/files/ips/ips_webhooks.json (or ips_webhooks.txt) and run
`inbox stripe-ips --update ips_webhooks.json`: the list is stored in the database, and
every web process takes it within a poll interval, without a restart. A file with an entry
that is not an IP address, or with none, is refused whole and nothing changes. `--reset`
drops the stored list; the package's copy serves again. Whichever of the stored and the
package's lists is newer serves, so upgrading to a release with a newer list wins too.
"""

from __future__ import annotations

import argparse
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING

from inbox.config import Settings

if TYPE_CHECKING:
    from inbox.stripe.ips import WebhookIPs

EXIT_OK = 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    from inbox import db
    from inbox.cli.dev import database_url
    from inbox.stripe import ips

    addresses = _read(Path(args.update)) if args.update else None
    with db.connect(database_url(settings), application_name="inbox-stripe-ips") as conn:
        if addresses is not None:
            ips.store(conn, addresses, Path(args.update).name)
            print(f"stored {len(addresses)} address(es) from {args.update}: every web process "
                  "takes them within a poll interval")
        elif args.reset and not ips.forget(conn):
            print("no stored list to drop")
        in_use = ips.in_use(conn)
    _print_list(in_use)
    print(_allowlist_state(settings))
    return EXIT_OK


def _read(path: Path) -> tuple[str, ...]:
    """The file's addresses, or BadAddressList (nothing is stored then)."""
    from inbox.stripe.ips import BadAddressList, parse

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadAddressList(f"cannot read {path}: {exc}; nothing changed") from None
    try:
        return parse(text)
    except BadAddressList as exc:
        raise BadAddressList(f"{path}: {exc}; nothing changed") from None


def _print_list(in_use: WebhookIPs) -> None:
    shape = "%Y-%m-%d %H:%M:%S UTC" if in_use.stored else "%Y-%m-%d"
    when = in_use.as_of.astimezone(UTC).strftime(shape)
    where = ("stored by inbox stripe-ips --update" if in_use.stored
             else "the copy this release ships")
    print(f"{len(in_use.addresses)} Stripe webhook address(es) from {in_use.source}, "
          f"as of {when} ({where}):")
    for address in in_use.addresses:
        print(f"  {address}")


def _allowlist_state(settings: Settings) -> str:
    hops = settings.trusted_proxy_hops
    state = "on" if settings.stripe_webhook_ip_allowlist else "off"
    client = ("the peer's address" if hops == 0
              else f"entry {hops} from the right of X-Forwarded-For")
    return (f"STRIPE_WEBHOOK_IP_ALLOWLIST is {state}; a client's address is {client} "
            f"(INBOX_TRUSTED_PROXY_HOPS={hops})")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "stripe-ips", help="show or update Stripe's webhook addresses (the IP allowlist)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--update", metavar="FILE",
                        help="store the addresses of Stripe's ips_webhooks.json (or .txt)")
    action.add_argument("--reset", action="store_true",
                        help="drop the stored list: the package's copy serves again")
    parser.set_defaults(func=run)
