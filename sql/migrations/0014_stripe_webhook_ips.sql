-- Stripe's webhook addresses as `inbox stripe-ips --update FILE` last set them, for
-- STRIPE_WEBHOOK_IP_ALLOWLIST. The package ships a dated copy of Stripe's list
-- (inbox/stripe/webhook_ips.json); a list given later lives here, where every web process
-- of every dyno reads it (a dyno's files are its own and vanish at its restart), and the
-- newer of the two serves (inbox/stripe/ips.py). No row: the shipped list serves.
CREATE TABLE inbox_stripe_webhook_ips (
    one        boolean     PRIMARY KEY DEFAULT true CONSTRAINT inbox_stripe_webhook_ips_one
                               CHECK (one),                  -- a single row
    addresses  inet[]      NOT NULL CONSTRAINT inbox_stripe_webhook_ips_not_empty
                               CHECK (cardinality(addresses) > 0),
    source     text        NOT NULL,                         -- the file it came from
    updated_at timestamptz NOT NULL DEFAULT now()            -- when it was set
);
