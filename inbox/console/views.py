"""The console's pages: a Flask blueprint under /console/, registered by create_app only
when INBOX_CONSOLE_PASSWORD is set (every /console/ path is a 404 otherwise).

GET never changes anything; every POST carries the CSRF token and is recorded in
inbox_console_actions when it changes state. Pages are Jinja templates with autoescaping:
payloads are customer text, shown as text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from inbox import db
from inbox.config import Settings
from inbox.console import auth, chart, outbox_pages, store
from inbox.console.filters import REPLAYABLE, BadFilter, EventFilter
from inbox.store import audit, ops, system_state

ConnectionSource = Callable[[], AbstractContextManager[db.Connection]]
PAGE_SIZE = 50
REFRESH_SECONDS = 10
ATTEMPT_OUTCOMES = ("processed", "retry", "dead", "crashed")
DELIVERY_OUTCOMES = ("sent", "failed")
# Payloads longer than this open folded (<details> closed).
FOLD_PAYLOAD_LINES = 40


def blueprint(settings: Settings, connection: ConnectionSource) -> Blueprint:
    """The console for these settings, reading and writing through `connection`."""
    bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
                   static_folder="static", static_url_path="/static")
    throttle = auth.Throttle()
    session_seconds = settings.console_session_seconds
    password = settings.console_password or ""

    @bp.before_request
    def guard() -> Response | None:
        if request.endpoint in ("console.static", "console.login"):
            return None
        if request.method == "POST" and not auth.csrf_valid(request.form.get("csrf_token")):
            return Response(render_template("console/stale.html"), status=403)
        if not auth.logged_in(session_seconds):
            if request.endpoint == "console.overview":
                return login_page()
            return redirect(url_for("console.overview", next=request.full_path))
        return None

    @bp.after_request
    def headers(response: Response) -> Response:
        response.headers.update(auth.SECURITY_HEADERS)
        return response

    @bp.app_context_processor
    def helpers() -> dict[str, Any]:
        return {"csrf_token": auth.csrf_token, "pretty": _pretty, "urlencode": urlencode,
                "duration": _duration}

    def login_page(error: str = "", status: int = 200) -> Response:
        target = request.args.get("next") or request.form.get("next") or ""
        return Response(render_template("console/login.html", error=error,
                                        next=_safe_next(target)), status=status)

    @bp.post("/login")
    def login() -> Response:
        client = auth.client_address(request)
        if not auth.csrf_valid(request.form.get("csrf_token")):
            return login_page("The form had expired. Please sign in again.", 400)
        wait = throttle.wait_seconds(client)
        if wait > 0:
            response = login_page(f"Too many wrong passwords: try again in {wait:.0f} s.", 429)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        if not auth.password_matches(request.form.get("password", ""), password):
            throttle.failed(client)
            return login_page("Wrong password.", 401)
        throttle.succeeded(client)
        auth.log_in()
        return redirect(_safe_next(request.form.get("next", "")) or url_for("console.overview"))

    @bp.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect(url_for("console.overview"))

    @bp.get("/")
    def overview() -> str:
        with connection() as conn:
            state = system_state.read(conn)
            day = store.per_minute(conn, "console_attempts_per_minute",
                                   timedelta(hours=24), ATTEMPT_OUTCOMES)
            sent_day = store.per_minute(conn, "console_deliveries_per_minute",
                                        timedelta(hours=24), DELIVERY_OUTCOMES)
            hour, sent_hour = store.last(day, 60), store.last(sent_day, 60)
            failures = store.newest_failures(conn)
            actions = store.recent_actions(conn, 5)
        charts = [
            chart.stacked("Event attempts, last hour", hour),
            chart.stacked("Messages delivered, last hour", sent_hour),
            chart.stacked("Event attempts, last 24 hours", day, bucket_minutes=10),
            chart.stacked("Messages delivered, last 24 hours", sent_day, bucket_minutes=10),
        ]
        return render_template("console/overview.html", state=state, charts=charts,
                               failures=failures, actions=actions, refresh=REFRESH_SECONDS)

    @bp.get("/events")
    def events() -> Response | str:
        try:
            found = EventFilter.from_args(request.args)
            before = _int_arg("before")
        except BadFilter as exc:
            return Response(render_template("console/events.html", filter=EventFilter(),
                                            error=str(exc), rows=[], next_before=None),
                            status=400)
        if found.event:
            with connection() as conn:
                matches = audit.find_events(conn, found.event)
            if len(matches) == 1:
                return redirect(url_for("console.event", ref=matches[0].id))
            rows = [audit.as_dict(m) for m in matches]
            return render_template("console/events.html", filter=found, rows=rows,
                                   error="" if rows else "No event with that id.",
                                   next_before=None)
        error, rows = "", []
        with connection() as conn:
            params = found.sql_params(conn)
            params["before"] = before
            try:
                rows = store.events(conn, params, text=found.q or None, limit=PAGE_SIZE + 1)
            except store.SearchTooSlow:
                error = ("The payload search ran out of time: narrow the received range "
                         "(since/until) and search again.")
        next_before = rows[PAGE_SIZE - 1]["id"] if len(rows) > PAGE_SIZE else None
        return render_template("console/events.html", filter=found, rows=rows[:PAGE_SIZE],
                               error=error, next_before=next_before,
                               replayable=found.status in REPLAYABLE and not found.q)

    @bp.get("/events/<ref>")
    def event(ref: str) -> Response | str:
        with connection() as conn:
            matches = audit.find_events(conn, ref)
            if not matches:
                abort(404)
            if len(matches) > 1:
                return redirect(url_for("console.events", event=ref))
            found = matches[0]
            page = {
                "event": found,
                "extras": store.event_extras(conn, found.id),
                "attempts": audit.attempts_of(conn, found.id),
                "messages": audit.outbox_of(conn, found.id),
                "deliveries": audit.delivery_attempts_of(conn, found.id),
                "versions": store.object_versions(conn, found.id),
            }
        payload = _pretty(found.payload)
        return render_template("console/event.html", payload=payload,
                               folded=payload.count("\n") > FOLD_PAYLOAD_LINES, **page)

    @bp.post("/events/<int:inbox_id>/replay")
    def replay_event(inbox_id: int) -> Response:
        with connection() as conn:
            matches = [m for m in audit.find_events(conn, str(inbox_id)) if m.id == inbox_id]
            if not matches:
                abort(404)
            replayed = ops.replay_events(conn, [matches[0].event_id], matches[0].provider)
            store.record_action(conn, "replay_event", str(inbox_id), len(replayed),
                                auth.client_address(request))
        note = "replayed" if replayed else "not-replayed"
        return redirect(url_for("console.event", ref=inbox_id, note=note))

    @bp.get("/failures")
    def failures() -> str:
        with connection() as conn:
            groups = store.failure_groups(conn)
        return render_template("console/failures.html", groups=groups)

    @bp.route("/replay", methods=["GET", "POST"])
    def replay_filter() -> Response | str:
        source = request.form if request.method == "POST" else request.args
        try:
            found = EventFilter.from_args(source)
        except BadFilter as exc:
            abort(Response(str(exc), status=400, mimetype="text/plain"))
        if found.status not in REPLAYABLE or found.q or found.event:
            abort(Response("a bulk replay needs a status of " + ", ".join(REPLAYABLE)
                           + " and no payload text or event id", status=400,
                           mimetype="text/plain"))
        with connection() as conn:
            params = found.sql_params(conn)
            if request.method == "GET":
                count = store.replay_count(conn, params)
                return render_template("console/replay.html", filter=found, count=count,
                                       capped=count >= store.REPLAY_COUNT_CAP)
            replayed = store.replay_by_filter(conn, params)
            store.record_action(conn, "replay_events", urlencode(found.args()), replayed,
                                auth.client_address(request))
        return redirect(url_for("console.events", **found.args(status="pending"),
                                replayed=str(replayed)))

    outbox_pages.register(bp, settings, connection)
    return bp


def _int_arg(name: str) -> int | None:
    raw = request.args.get(name, "")
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise BadFilter(f"{name} must be a number")
    return int(raw)


def _safe_next(target: str) -> str:
    """Only a console path of this site (never //host or another scheme)."""
    if target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _duration(start: Any, end: Any) -> str:
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"
