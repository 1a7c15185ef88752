"""Stripe beyond the webhook: reconciliation from Stripe's Events API (`inbox reconcile
stripe`, and the workers' automatic runs): api (the SDK, pages, rate limits), reconcile
(store what the inbox lacks), store (its queries); ips, Stripe's webhook addresses
(STRIPE_WEBHOOK_IP_ALLOWLIST, `inbox stripe-ips`); and thin (a thin event's full event and
related object, fetched for its handler)."""
