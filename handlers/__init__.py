"""The application's handlers (INBOX_HANDLERS=handlers, the default).

An example: the SaaS billing story of the Stripe fixture events, in `billing.py`, with its
tables in `migrations/` (applied by `inbox migrate` after the product's own).
"""

from handlers import billing

__all__ = ["billing"]
