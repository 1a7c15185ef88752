-- Stripe's webhook addresses (inbox/stripe/ips.py): the copy `inbox stripe-ips --update`
-- stores, read by the command and by each web process's duties (once per poll interval,
-- with STRIPE_WEBHOOK_IP_ALLOWLIST on).

-- name: stripe_webhook_ips_read
-- The stored list (no row: none was stored), each address as plain text.
SELECT ARRAY(SELECT host(a) FROM unnest(addresses) a) AS addresses, source, updated_at
FROM inbox_stripe_webhook_ips;

-- name: stripe_webhook_ips_replace
INSERT INTO inbox_stripe_webhook_ips AS w (addresses, source, updated_at)
VALUES (%(addresses)s::inet[], %(source)s, now())
ON CONFLICT (one) DO UPDATE
SET addresses = EXCLUDED.addresses, source = EXCLUDED.source, updated_at = now()
RETURNING w.updated_at;

-- name: stripe_webhook_ips_forget
-- `inbox stripe-ips --reset`: back to the list the package ships.
DELETE FROM inbox_stripe_webhook_ips;
