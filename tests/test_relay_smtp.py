"""Emails through the relay: outbox row → real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

from tests.support import wait_for
from tests.test_relay import (
    add_message,
    attempts_history,
    count_status,
    outbox,
    relay_settings,
    running_relay,
)
from tests.test_transports_smtp import smtp_server


def test_email_content_and_message_id_arrive_and_other_topics_go_elsewhere(database_url, db):
    receipt = {
        "to": ["ada@example.com"],
        "subject": "Payment received: inv_1",
        "text": "Thank you. Invoice PDF: https://pay.example/inv_1.pdf",
        "html": "<p>Thank you. <a href=\"https://pay.example/inv_1.pdf\">Invoice</a></p>",
    }
    with smtp_server() as (mailbox, port):
        routes = f"email.*=smtp://127.0.0.1:{port}?from=billing@shop.example,*=log:"
        add_message(db, "email.send", receipt, "stripe.evt_1.receipt")
        add_message(db, "email.send", {**receipt, "to": "nobody@example.com"}, "bounce")
        add_message(db, "email.send", {"to": "ada@example.com", "template": "x"}, "no-body")
        add_message(db, "audit.note", {"n": 1}, "logged")
        with running_relay(relay_settings(database_url, routes)):
            wait_for(lambda: count_status(db, "sent") == 2 and count_status(db, "dead") == 2,
                     "two sent (email, log) and two dead")
    (sender, recipients, email), = mailbox.received
    assert sender == "billing@shop.example" and recipients == ["ada@example.com"]
    assert email["Message-ID"] == "<stripe.evt_1.receipt@webhook-inbox>"
    assert email["Subject"] == "Payment received: inv_1"
    assert email["From"] == "billing@shop.example" and email["To"] == "ada@example.com"
    assert "https://pay.example/inv_1.pdf" in email.get_body(("plain",)).get_content()
    assert "<a href=" in email.get_body(("html",)).get_content()
    rows = outbox(db)
    assert rows["stripe.evt_1.receipt"]["status"] == "sent"
    assert rows["logged"]["status"] == "sent"
    assert rows["bounce"]["status"] == "dead" and "550" in rows["bounce"]["last_error"]
    assert rows["no-body"]["last_error"].startswith("not an email: no subject (the relay")
    # The history keeps the server's answers: the reply to DATA, the refusal.
    [sent] = attempts_history(db, "stripe.evt_1.receipt")
    assert sent["outcome"] == "sent" and sent["smtp_reply"].startswith("250 ")
    [bounced] = attempts_history(db, "bounce")
    assert bounced["outcome"] == "dead" and "550" in bounced["smtp_reply"]
    [logged] = attempts_history(db, "logged")
    assert (logged["outcome"], logged["smtp_reply"], logged["http_status"]) == ("sent", None, None)


def test_an_smtp_outage_is_retried_then_delivered(database_url, db):
    from tests.support import free_port

    port = free_port()
    add_message(db, "email.send", {"to": "a@example.com", "subject": "s", "text": "t"}, "k1")
    settings = relay_settings(database_url, f"email.*=smtp://127.0.0.1:{port}",
                              max_attempts=50, retry_cap_seconds=0.2)
    with running_relay(settings):
        wait_for(lambda: outbox(db)["k1"]["attempts"] >= 2, "a failed attempt or two")
        assert outbox(db)["k1"]["status"] == "pending"
        assert "Connection" in outbox(db)["k1"]["last_error"]
        from aiosmtpd.controller import Controller

        from tests.test_transports_smtp import Mailbox

        mailbox = Mailbox()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            wait_for(lambda: count_status(db, "sent") == 1, "the email once the server is up")
        finally:
            controller.stop()
    assert len(mailbox.received) == 1
