"""pgbench scripts built from the product's own named queries (sql/queries/*.sql).

The drain ceiling runs exactly the worker's statements, one event per transaction: its
claim (batch of 1), the switch to a durable commit, the handler's outbox message and the
outcome (inbox_finish: status, attempts history, end of the lease). The
SQL is read from the same files the worker reads, so the ceiling follows the worker's SQL
when it changes. pgbench must run with `-M prepared` (or extended): the `:variables` then
travel as parameters, which lets a timestamp or a JSON text stand inside an ARRAY[...].
"""

from __future__ import annotations

import re

from inbox.queries import query

_PARAM = re.compile(r"%\((\w+)\)[sb]")


def statement(name: str, params: dict[str, str]) -> str:
    """Query `name` without its comments, each %(param)s or %(param)b (a parameter sent in
    binary) replaced by a pgbench expression."""
    lines = [ln for ln in query(name).splitlines() if not ln.lstrip().startswith("--")]
    text = "\n".join(lines).strip().rstrip(";")

    def substitute(match: re.Match[str]) -> str:
        return params[match.group(1)]

    return _PARAM.sub(substitute, text)


def drain_one_event_per_transaction() -> str:
    """Claim + no-op handler (one outbox message) + outcome, in one transaction.

    No savepoint: the worker opens one only for a handler that runs SQL of its own, and
    writes the messages of a batch with its outcomes.
    """
    claim = statement("inbox_claim", {"batch": "1", "worker": "'pgbench'",
                                       "scan_from": "'-infinity'"})
    durable = statement("inbox_durable_commit", {})
    outbox = statement("outbox_enqueue", {
        "inbox_ids": "ARRAY[:id::bigint]",
        "topics": "ARRAY['bench.noop']",
        "payloads": "ARRAY['{\"bench\": true}']",
        # The worker's key, provider:event_id:topic:n (chr(58) is ':', which pgbench would
        # take for a variable even inside a string).
        "idempotency_keys":
            "ARRAY[concat_ws(chr(58), 'stripe', :event_id::text, 'bench.noop', '0')]",
    })
    finish = statement("inbox_finish", {
        "ids": "ARRAY[:id::bigint]",
        "backends": "ARRAY[:locked_backend::integer]",
        "locked_ats": "ARRAY[:locked_at::timestamptz]",
        "statuses": "ARRAY['processed']",
        "outcomes": "ARRAY['processed']",
        "delays": "ARRAY[NULL]",
        "errors": "ARRAY[NULL]",
        "started_ats": "ARRAY[now()]",
        "workers": "ARRAY['pgbench']",
    })
    return "\n".join([
        "BEGIN;",
        f"{claim} \\gset",
        f"{durable};",
        f"{outbox};",
        f"{finish};",
        "COMMIT;",
        "",
    ])
