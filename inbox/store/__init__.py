"""One function per named query, grouped by the process that uses them.

`receiver` for the web process, `worker` for the inbox worker, `relay` for the outbox
relay, `ops` for the operator commands. Each function takes a connection (or pool) and
returns plain values or small frozen dataclasses; SQL stays in sql/queries/.
"""
