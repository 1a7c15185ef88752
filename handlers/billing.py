"""Example handlers: the SaaS billing story of the Stripe fixture events.

Each handler runs in the event's transaction: its writes, its outbox messages and the
event's status commit together or not at all. Two rules keep state right when Stripe
delivers out of order or twice:

- **Never move an object backwards.** Before changing an object a handler asks
  `tx.apply_if_newer(key)`, which compares this event's `created` with the newest event
  applied to that object. The user's plan is an object of its own (`...:plan`), touched by
  invoice and subscription events alike, so a late `invoice.paid` cannot reactivate a
  deleted subscription's plan.
- **Write whole states, not increments.** An applied event writes everything it knows about
  the object, so the newest event alone decides the final state, in any arrival order.

An event for a customer the app does not know raises LookupError: retried with backoff (the
sign-up may not be committed yet), then `dead`, from where `inbox replay` brings it back.

Emails are queued as whole emails (`to`, `subject`, `text`), which is what the relay's SMTP
route sends (it renders no templates); the facts they are made of (invoice number, amount,
links) ride along as extra keys, for an HTTP route to an email API with templates of its
own, and for audits (`payload ->> 'invoice_pdf'`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from inbox import Permanent, handler

# Stripe's subscription status -> the user's plan status.
PLAN_STATUS = {
    "active": "active",
    "trialing": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "canceled": "canceled",
    "incomplete_expired": "canceled",
}


def _object(event) -> dict[str, Any]:
    return event.payload["data"]["object"]


def _time(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


# Currencies whose amounts Stripe gives in whole units (no cents).
ZERO_DECIMAL_CURRENCIES = frozenset({
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
})


def _money(amount: int | None, currency: str | None) -> str:
    """Stripe's amount in the currency's smallest unit, for people: `20.00 USD`."""
    code = (currency or "").upper()
    if amount is None:
        return f"an amount in {code}" if code else "an amount"
    if (currency or "").lower() in ZERO_DECIMAL_CURRENCIES:
        return f"{amount:,} {code}".strip()
    return f"{amount / 100:,.2f} {code}".strip()


def _day(seconds: int | None) -> str | None:
    """A Unix time as a date (UTC): `2024-09-26`."""
    moment = _time(seconds)
    return moment.strftime("%Y-%m-%d") if moment else None


def _text(*paragraphs: str | None) -> str:
    """An email body: the paragraphs given (None left out), a blank line apart."""
    return "\n\n".join(p for p in paragraphs if p) + "\n"


def _user(tx, customer: str | None) -> tuple[int, str]:
    """(id, email) of the app user of a Stripe customer."""
    if not customer:
        raise Permanent("the object has no customer")
    row = tx.execute(
        "SELECT id, email FROM app_users WHERE stripe_customer_id = %s", [customer]
    ).fetchone()
    if row is None:
        raise LookupError(f"unknown customer {customer}")
    return row[0], row[1]


def _plan_key(customer: str) -> str:
    return f"stripe:customer:{customer}:plan"


# -- subscriptions -------------------------------------------------------------------------


@handler("stripe", "customer.subscription.created")
@handler("stripe", "customer.subscription.updated")
@handler("stripe", "customer.subscription.deleted")
def subscription_changed(event, tx) -> None:
    """Upsert the subscription; the user's plan follows it (`free` once it is canceled)."""
    sub = _object(event)
    user_id, email = _user(tx, sub.get("customer"))
    items = sub.get("items", {}).get("data") or [{}]
    price = (items[0].get("price") or {}).get("id")
    if tx.apply_if_newer(f"stripe:subscription:{sub['id']}"):
        tx.execute(
            """
            INSERT INTO subscriptions AS s (stripe_subscription_id, user_id, status, price_id,
                cancel_at_period_end, cancel_at, canceled_at, ended_at, current_period_end)
            VALUES (%(id)s, %(user)s, %(status)s, %(price)s, %(cape)s, %(cancel_at)s,
                    %(canceled_at)s, %(ended_at)s, %(period_end)s)
            ON CONFLICT (stripe_subscription_id) DO UPDATE
            SET status = EXCLUDED.status, price_id = EXCLUDED.price_id,
                cancel_at_period_end = EXCLUDED.cancel_at_period_end,
                cancel_at = EXCLUDED.cancel_at, canceled_at = EXCLUDED.canceled_at,
                ended_at = EXCLUDED.ended_at, current_period_end = EXCLUDED.current_period_end,
                updated_at = now()
            """,
            {
                "id": sub["id"], "user": user_id, "status": sub["status"], "price": price,
                "cape": bool(sub.get("cancel_at_period_end")),
                "cancel_at": _time(sub.get("cancel_at")),
                "canceled_at": _time(sub.get("canceled_at")),
                "ended_at": _time(sub.get("ended_at")),
                "period_end": _time(items[0].get("current_period_end")),
            },
        )
        if event.type == "customer.subscription.deleted":
            ended = _day(sub.get("ended_at") or sub.get("canceled_at"))
            tx.outbox("email.subscription_ended", {
                "to": email,
                "subject": "Your subscription has ended",
                "text": _text(
                    f"Your subscription {sub['id']} ended on {ended}." if ended
                    else f"Your subscription {sub['id']} has ended.",
                    "You keep your account on the free plan. Subscribe again at any time.",
                ),
                "subscription": sub["id"],
                "ended_at": ended,
            })
    if tx.apply_if_newer(_plan_key(sub["customer"])):
        status = PLAN_STATUS.get(sub["status"], "none")
        plan = price if status in ("active", "past_due") and price else "free"
        tx.execute(
            "UPDATE app_users SET plan = %s, plan_status = %s, updated_at = now() WHERE id = %s",
            [plan, status, user_id],
        )


# -- invoices ------------------------------------------------------------------------------


def _upsert_invoice(tx, invoice: dict[str, Any], user_id: int) -> None:
    parent = invoice.get("parent") or {}
    subscription = (parent.get("subscription_details") or {}).get("subscription")
    tx.execute(
        """
        INSERT INTO invoices (stripe_invoice_id, user_id, stripe_subscription_id, number,
            status, amount_due, amount_paid, currency, attempt_count, hosted_invoice_url,
            invoice_pdf)
        VALUES (%(id)s, %(user)s, %(sub)s, %(number)s, %(status)s, %(due)s, %(paid)s,
                %(currency)s, %(attempts)s, %(url)s, %(pdf)s)
        ON CONFLICT (stripe_invoice_id) DO UPDATE
        SET status = EXCLUDED.status, amount_due = EXCLUDED.amount_due,
            amount_paid = EXCLUDED.amount_paid, attempt_count = EXCLUDED.attempt_count,
            number = EXCLUDED.number, hosted_invoice_url = EXCLUDED.hosted_invoice_url,
            invoice_pdf = EXCLUDED.invoice_pdf, updated_at = now()
        """,
        {
            "id": invoice["id"], "user": user_id, "sub": subscription,
            "number": invoice.get("number"), "status": invoice["status"],
            "due": invoice.get("amount_due"), "paid": invoice.get("amount_paid"),
            "currency": invoice.get("currency"), "attempts": invoice.get("attempt_count"),
            "url": invoice.get("hosted_invoice_url"), "pdf": invoice.get("invoice_pdf"),
        },
    )


def _set_plan_status(tx, customer: str, user_id: int, status: str) -> None:
    if tx.apply_if_newer(_plan_key(customer)):
        tx.execute(
            "UPDATE app_users SET plan_status = %s, updated_at = now() WHERE id = %s",
            [status, user_id],
        )


@handler("stripe", "invoice.paid")
def invoice_paid(event, tx) -> None:
    """Activate the plan and queue a receipt email with the invoice PDF."""
    invoice = _object(event)
    user_id, email = _user(tx, invoice.get("customer"))
    if tx.apply_if_newer(f"stripe:invoice:{invoice['id']}"):
        _upsert_invoice(tx, invoice, user_id)
        number = invoice.get("number") or invoice["id"]
        amount = _money(invoice.get("amount_paid"), invoice.get("currency"))
        url, pdf = invoice.get("hosted_invoice_url"), invoice.get("invoice_pdf")
        tx.outbox("email.receipt", {
            "to": email,
            "subject": f"Receipt for invoice {number}: {amount} paid",
            "text": _text(
                f"Thank you: we received your payment of {amount} for invoice {number}.",
                f"Invoice PDF: {pdf}" if pdf else None,
                f"Invoice online: {url}" if url else None,
            ),
            "invoice": number,
            "amount": invoice.get("amount_paid"),
            "currency": invoice.get("currency"),
            "hosted_invoice_url": url,
            "invoice_pdf": pdf,
        })
    _set_plan_status(tx, invoice["customer"], user_id, "active")


@handler("stripe", "invoice.payment_failed")
def invoice_payment_failed(event, tx) -> None:
    """Mark the plan past due and queue a dunning email (unless the invoice was paid since)."""
    invoice = _object(event)
    user_id, email = _user(tx, invoice.get("customer"))
    if tx.apply_if_newer(f"stripe:invoice:{invoice['id']}"):
        _upsert_invoice(tx, invoice, user_id)
        number = invoice.get("number") or invoice["id"]
        amount = _money(invoice.get("amount_due"), invoice.get("currency"))
        url, retry = invoice.get("hosted_invoice_url"), _day(invoice.get("next_payment_attempt"))
        tx.outbox("email.dunning", {
            "to": email,
            "subject": f"Payment failed for invoice {number}",
            "text": _text(
                f"We could not collect your payment of {amount} for invoice {number}.",
                f"Pay it or update your card here: {url}" if url else None,
                f"Otherwise we try your card again on {retry}." if retry else None,
            ),
            "invoice": number,
            "amount": invoice.get("amount_due"),
            "currency": invoice.get("currency"),
            "pay_url": url,
            "next_attempt_at": invoice.get("next_payment_attempt"),
        })
    _set_plan_status(tx, invoice["customer"], user_id, "past_due")


# -- one-time payments ---------------------------------------------------------------------


def _upsert_payment(tx, intent: str, **state: Any) -> None:
    tx.execute(
        """
        INSERT INTO payments (stripe_payment_intent_id, status, amount, currency,
            amount_refunded, latest_charge, failure_message)
        VALUES (%(intent)s, %(status)s, %(amount)s, %(currency)s, %(refunded)s, %(charge)s,
                %(failure)s)
        ON CONFLICT (stripe_payment_intent_id) DO UPDATE
        SET status = EXCLUDED.status, amount = EXCLUDED.amount, currency = EXCLUDED.currency,
            amount_refunded = EXCLUDED.amount_refunded,
            latest_charge = EXCLUDED.latest_charge,
            failure_message = EXCLUDED.failure_message, updated_at = now()
        """,
        {"intent": intent, **state},
    )


def _payment_key(intent: str) -> str:
    return f"stripe:payment_intent:{intent}"


@handler("stripe", "payment_intent.succeeded")
@handler("stripe", "payment_intent.payment_failed")
def payment_intent_changed(event, tx) -> None:
    """Record the payment's outcome (a failure keeps Stripe's message for support)."""
    intent = _object(event)
    tx.lock_object(_payment_key(intent["id"]))  # serialise with its checkout and refunds
    if not tx.apply_if_newer(_payment_key(intent["id"])):
        return
    succeeded = event.type == "payment_intent.succeeded"
    error = intent.get("last_payment_error") or {}
    _upsert_payment(
        tx, intent["id"],
        status="succeeded" if succeeded else "failed",
        amount=intent.get("amount"), currency=intent.get("currency"), refunded=0,
        charge=intent.get("latest_charge"),
        failure=None if succeeded else error.get("message"),
    )


@handler("stripe", "charge.refunded")
def charge_refunded(event, tx) -> None:
    """Record the refund on the payment and its order."""
    charge = _object(event)
    intent = charge.get("payment_intent") or charge["id"]
    tx.lock_object(_payment_key(intent))
    if not tx.apply_if_newer(_payment_key(intent)):
        return
    full = charge.get("amount_refunded", 0) >= charge.get("amount", 0)
    _upsert_payment(
        tx, intent,
        status="refunded" if full else "partially_refunded",
        amount=charge.get("amount"), currency=charge.get("currency"),
        refunded=charge.get("amount_refunded", 0), charge=charge["id"], failure=None,
    )
    if full:
        tx.execute(
            "UPDATE orders SET status = 'refunded' WHERE stripe_payment_intent_id = %s",
            [intent],
        )
    email = charge.get("receipt_email") or (charge.get("billing_details") or {}).get("email")
    if email:
        amount = _money(charge.get("amount_refunded"), charge.get("currency"))
        receipt = charge.get("receipt_url")
        tx.outbox("email.refund", {
            "to": email,
            "subject": f"Refund of {amount}",
            "text": _text(
                f"We refunded {amount} of your payment ({charge['id']}). Refunds usually"
                " take 5 to 10 business days to appear on your statement.",
                f"Your receipt: {receipt}" if receipt else None,
            ),
            "charge": charge["id"],
            "amount": charge.get("amount_refunded"),
            "currency": charge.get("currency"),
            "receipt_url": receipt,
        })


@handler("stripe", "checkout.session.completed")
def checkout_completed(event, tx) -> None:
    """Fulfil the order once: record it, confirm by email, ask the warehouse to ship it."""
    session = _object(event)
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        return  # an asynchronous payment: fulfilled on checkout.session.async_payment_succeeded
    intent = session.get("payment_intent")
    status = "fulfilled"
    if intent:
        tx.lock_object(_payment_key(intent))  # a refund handled at the same time waits
        row = tx.execute(
            "SELECT status FROM payments WHERE stripe_payment_intent_id = %s", [intent]
        ).fetchone()
        if row and row[0] == "refunded":  # the refund was delivered first
            status = "refunded"
    email = session.get("customer_email") or (session.get("customer_details") or {}).get("email")
    created = tx.execute(
        """
        INSERT INTO orders (stripe_checkout_session_id, stripe_payment_intent_id, email,
                            amount_total, currency, status)
        VALUES (%s, %s, %s, %s, %s, %s)
        ON CONFLICT (stripe_checkout_session_id) DO NOTHING
        RETURNING 1
        """,
        [session["id"], intent, email, session.get("amount_total"), session.get("currency"),
         status],
    ).fetchone()
    if created and status == "fulfilled":
        order = {"order": session["id"], "amount": session.get("amount_total"),
                 "currency": session.get("currency")}
        if email:
            amount = _money(session.get("amount_total"), session.get("currency"))
            tx.outbox("email.order_confirmation", {
                "to": email,
                "subject": f"Order confirmed: {amount}",
                "text": _text(
                    f"Thank you for your order of {amount}.",
                    "We are preparing it and will let you know when it ships.",
                    f"Order reference: {session['id']}",
                ),
                **order,
            })
        tx.outbox("fulfilment.ship", order)
