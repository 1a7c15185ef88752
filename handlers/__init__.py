"""The application's handlers (INBOX_HANDLERS=handlers, the default).

An example: the SaaS billing story of the Stripe fixture events, in `billing.py`, with its
tables in `migrations/` (applied by `inbox migrate` after the product's own) and its demo
data in `seeds/` (the fixture story's customer, applied by `inbox dev` only).
"""

from handlers import billing

__all__ = ["billing"]
