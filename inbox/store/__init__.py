"""The operator's named queries, shared by every command and page that inspects or repairs.

`ops` (status counts, replay) and `audit` (listing and showing events, prune) serve the
`inbox` commands (inbox/cli/) and the console. A process's own queries live in its room:
inbox/web/store.py, inbox/worker/store.py, inbox/relay/store.py. Each function takes a
connection (or pool) and returns plain values or small frozen dataclasses; SQL stays in
sql/queries/.
"""
