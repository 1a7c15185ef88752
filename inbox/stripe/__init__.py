"""Stripe beyond the webhook: reconciliation from Stripe's Events API (`inbox reconcile
stripe`, and the workers' automatic runs): api (the SDK, pages, rate limits), reconcile
(store what the inbox lacks), store (its queries); and thin (a thin event's full event and
related object, fetched for its handler)."""
