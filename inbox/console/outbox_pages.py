"""The console's outbox pages: messages by status, topic and destination; one message
with its delivery attempts; replay one, or every dead message of a topic.

A destination is shown as scheme://host only: INBOX_ROUTES may hold SMTP credentials and
URL tokens, which the console never shows.
"""

from __future__ import annotations

import fnmatch
import glob
from collections.abc import Callable
from contextlib import AbstractContextManager
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for

from inbox import db
from inbox.config import Settings
from inbox.console import auth, store
from inbox.store import ops, system_state

ConnectionSource = Callable[[], AbstractContextManager[db.Connection]]
PAGE_SIZE = 50
MESSAGE_STATUSES = ("pending", "sent", "dead")


def destination(routes: str, topic: str) -> str:
    """Where INBOX_ROUTES sends `topic` (its first matching pattern), as scheme://host."""
    for entry in routes.split(","):
        pattern, _, url = entry.strip().partition("=")
        if url and fnmatch.fnmatchcase(topic, pattern.strip()):
            parts = urlsplit(url.strip())
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            return f"{parts.scheme}://{host}" if host else f"{parts.scheme}:"
    return "no route"


def register(bp: Blueprint, settings: Settings, connection: ConnectionSource) -> None:
    """Add the outbox pages to the console's blueprint."""

    def where(topic: str) -> str:
        return destination(settings.routes, topic)

    @bp.get("/outbox")
    def outbox() -> Response | str:
        status = request.args.get("status", "")
        topic = request.args.get("topic", "")
        raw_before = request.args.get("before", "")
        if status and status not in MESSAGE_STATUSES:
            abort(Response("unknown status", status=400, mimetype="text/plain"))
        before = int(raw_before) if raw_before.isdigit() and len(raw_before) < 19 else None
        with connection() as conn:
            _, totals = system_state.status_counts(conn)
            breakdown = store.outbox_breakdown(conn)
            rows = store.outbox_messages(conn, status=status or None, topic=topic or None,
                                         before=before, limit=PAGE_SIZE + 1)
        next_before = rows[PAGE_SIZE - 1]["id"] if len(rows) > PAGE_SIZE else None
        return render_template("console/outbox.html", totals=totals, breakdown=breakdown,
                               rows=rows[:PAGE_SIZE], status=status, topic=topic,
                               next_before=next_before, where=where)

    @bp.get("/outbox/<int:message_id>")
    def message(message_id: int) -> str:
        with connection() as conn:
            found = store.outbox_message(conn, message_id)
            if found is None:
                abort(404)
            attempts = store.outbox_attempts(conn, message_id)
        return render_template("console/message.html", message=found, attempts=attempts,
                               destination=where(found["topic"]))

    @bp.post("/outbox/<int:message_id>/replay")
    def replay_message(message_id: int) -> Response:
        with connection() as conn:
            replayed = ops.replay_outbox_ids(conn, [message_id])
            _record(conn, "replay_message", str(message_id), len(replayed))
        return redirect(url_for("console.message", message_id=message_id,
                                note="replayed" if replayed else "not-replayed"))

    @bp.route("/outbox/replay-dead", methods=["GET", "POST"])
    def replay_dead_topic() -> Response | str:
        source = request.form if request.method == "POST" else request.args
        topic = source.get("topic", "")
        if not topic:
            abort(Response("a topic is required", status=400, mimetype="text/plain"))
        pattern = glob.escape(topic)  # this topic exactly, whatever characters it holds
        with connection() as conn:
            if request.method == "GET":
                count = len(ops.replay_outbox_preview(conn, status="dead",
                                                      topic_pattern=pattern))
                return render_template("console/replay_topic.html", topic=topic,
                                       count=count)
            replayed = ops.replay_outbox_status(conn, "dead", pattern)
            _record(conn, "replay_messages", f"dead {topic}", len(replayed))
        return redirect(url_for("console.outbox", topic=topic, status="pending",
                                replayed=str(len(replayed))))


def _record(conn: db.Connection, action: str, target: str, affected: int) -> None:
    store.record_action(conn, action, target, affected, auth.client_address(request))
