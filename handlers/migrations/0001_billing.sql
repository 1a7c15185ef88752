-- The example application's tables: a SaaS billing story on Stripe (handlers/billing.py).
-- Applied by `inbox migrate` after the product's migrations, recorded in
-- inbox_app_migrations as ('handlers', '0001_billing.sql').

-- The application's users. The app creates them at sign-up with their Stripe customer id;
-- the handlers only change their plan.
CREATE TABLE app_users (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email              text        NOT NULL,
    stripe_customer_id text        UNIQUE,
    -- The price the user pays for, or 'free'.
    plan               text        NOT NULL DEFAULT 'free',
    -- none (never subscribed) | active | past_due (a renewal failed) | canceled
    plan_status        text        NOT NULL DEFAULT 'none'
                       CHECK (plan_status IN ('none', 'active', 'past_due', 'canceled')),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscriptions (
    stripe_subscription_id text        PRIMARY KEY,
    user_id                bigint      NOT NULL REFERENCES app_users (id),
    status                 text        NOT NULL,  -- Stripe's: active, past_due, canceled, ...
    price_id               text,
    cancel_at_period_end   boolean     NOT NULL DEFAULT false,
    cancel_at              timestamptz,
    canceled_at            timestamptz,
    ended_at               timestamptz,
    current_period_end     timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE invoices (
    stripe_invoice_id      text        PRIMARY KEY,
    user_id                bigint      NOT NULL REFERENCES app_users (id),
    stripe_subscription_id text,
    number                 text,
    status                 text        NOT NULL,  -- Stripe's: open, paid, void, ...
    amount_due             bigint,
    amount_paid            bigint,
    currency               text,
    attempt_count          integer,
    hosted_invoice_url     text,
    invoice_pdf            text,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- One-time payments, by payment intent (its charge's refund lands here too).
CREATE TABLE payments (
    stripe_payment_intent_id text        PRIMARY KEY,
    -- failed | succeeded | partially_refunded | refunded
    status                   text        NOT NULL,
    amount                   bigint,
    currency                 text,
    amount_refunded          bigint      NOT NULL DEFAULT 0,
    latest_charge            text,
    failure_message          text,
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- Orders fulfilled from completed Checkout sessions, once each.
CREATE TABLE orders (
    stripe_checkout_session_id text        PRIMARY KEY,
    stripe_payment_intent_id   text,
    email                      text,
    amount_total               bigint,
    currency                   text,
    status                     text        NOT NULL CHECK (status IN ('fulfilled', 'refunded')),
    fulfilled_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_payment_intent_idx ON orders (stripe_payment_intent_id);
