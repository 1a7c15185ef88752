"""The operator console: server-rendered pages under /console/ of the web process.

auth (login, session, CSRF, headers), views (the blueprint), store (its queries),
filters (what the events list's URL means), chart (the overview's SVG), templates/ and
static/ (plain CSS, no script). Off unless INBOX_CONSOLE_PASSWORD is set.
"""
