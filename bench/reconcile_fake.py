"""`python -m bench.reconcile_fake [--events N]`: `inbox reconcile stripe`'s rate against
the tests' fake of Stripe's Events API (tests/stripe_fake.py), on a throwaway cluster.

Three runs over the same N events: every event missing (all stored), a second run (all
already there), and a dry run. Prints events/s of each. The fake answers on loopback, so
this measures our side (the SDK's request and parse, the page insert, the NOTIFY), not
Stripe's API, which answers a page in ~200-500 ms from Europe.
"""

from __future__ import annotations

import argparse
import time

import psycopg

from inbox.config import Settings
from inbox.migrations import migrate
from inbox.stripe import api
from inbox.stripe.reconcile import reconcile
from inbox.throwaway import Cluster
from tests.stripe_fake import API_KEY, fake_stripe, make_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    cluster = Cluster()
    try:
        url = cluster.url()
        migrate(url)
        with fake_stripe() as (fake, base):
            fake.add(make_events(args.events, spacing_seconds=10))
            settings = Settings(database_url=url, stripe_api_key=API_KEY, stripe_api_base=base)
            listing = api.Listing(since=int(time.time()) - 29 * 86400)
            with psycopg.connect(url, autocommit=True) as conn:
                for name, dry_run in (("all missing", False), ("all stored", False),
                                      ("dry run", True)):
                    result = reconcile(conn, settings, listing, dry_run=dry_run)
                    print(f"{name:12} found {result.found} added {result.added} "
                          f"in {result.pages} pages, {result.seconds:.2f} s: "
                          f"{result.events_per_second:,.0f} events/s")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
