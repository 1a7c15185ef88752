"""Log setup for the entry points: one line per record on stderr, where dynos log.

Two formats, `INBOX_LOG_FORMAT` (Settings.log_format):
- `text` (the default): `2026-01-02 10:11:12,345 INFO inbox.worker attempt event_id=evt_1
  type=invoice.paid attempt=1 outcome=processed ms=3.2`;
- `json`: one JSON object per line, `{"ts": ..., "level": ..., "logger": ..., <fields>}`,
  for every record: a plain record's text is its `message` (its traceback `exc`), a
  structured line's fields are at the top level.

Structured lines (the web's request line, the worker's attempts, the relay's deliveries)
are logged as `Lines`: one logging call carries a batch's lines, and the formatter writes
each as a complete line of its own, with its own time, level and logger prefix. A drain
of ~10,000 events/s then makes one logging call per batch of 100, not one per event
(docs/decisions.md, "Structured log lines, one logging call per batch").
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

FORMATS = ("text", "json")
# A handler's error message in an attempt line is cut to this many characters: the
# operator's clue, not the whole story (that is in last_error).
MAX_LOGGED_ERROR_CHARS = 200

Fields = Mapping[str, Any]
_NEEDS_QUOTES = re.compile(r'[\s"=\\]')


class Lines:
    """The message of a record that carries structured lines: `event` (the word after
    the logger's name in text, `"event"` in JSON) and one mapping of fields per line.

    `str()` gives the text lines without their prefix (for handlers other than ours, such
    as pytest's caplog); `rows` are the fields, for tests.
    """

    __slots__ = ("event", "rows")

    def __init__(self, event: str, rows: Sequence[Fields]) -> None:
        self.event = event
        self.rows = rows

    def __str__(self) -> str:
        return "\n".join(text_body(self.event, row) for row in self.rows)


def log_lines(logger: logging.Logger, level: int, event: str, rows: Sequence[Fields]) -> None:
    """Log these lines with one logging call (nothing when there are none, or the level is
    off)."""
    if rows and logger.isEnabledFor(level):
        logger.log(level, Lines(event, rows))


def text_value(value: object) -> str:
    """A value of `key=value`: as it is, or quoted (JSON string) when it holds a space,
    a quote, an `=` or a line break, so every line stays one line and parses back."""
    if isinstance(value, str):
        if not value or _NEEDS_QUOTES.search(value):
            return orjson.dumps(value).decode()
        return value
    if value is None:
        return "-"
    return str(value)


def text_body(event: str, row: Fields) -> str:
    return " ".join([event, *(f"{key}={text_value(value)}" for key, value in row.items()
                              if value is not None)])


class TextFormatter(logging.Formatter):
    """Today's human format; each structured line gets the record's prefix."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg
        if isinstance(msg, Lines):
            prefix = f"{self.formatTime(record)} {record.levelname} {record.name} "
            return "\n".join(prefix + text_body(msg.event, row) for row in msg.rows)
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601, ms), level, logger, then the fields
    of a structured line (those that are None left out, as in text) or the `message`
    (and `exc`) of a plain record."""

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        head = {"ts": f"{ts}.{int(created % 1 * 1000):03d}Z", "level": record.levelname,
                "logger": record.name}
        msg = record.msg
        if isinstance(msg, Lines):
            return "\n".join(
                orjson.dumps({**head, "event": msg.event,
                              **{k: v for k, v in row.items() if v is not None}},
                             default=str).decode()
                for row in msg.rows
            )
        line: dict[str, Any] = {**head, "message": record.getMessage()}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def formatter(log_format: str) -> logging.Formatter:
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r} (use one of {FORMATS})")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(level: int = logging.INFO, log_format: str = "text") -> None:
    """Send every record to stderr in `log_format`, the `inbox` loggers from `level`, the
    others from WARNING (the root logger's default); idempotent (a second call sets the
    format again).

    The handler sits on the root logger so that the handlers' own loggers and the
    libraries' (psycopg's pool) are written in the same format; gunicorn's own loggers do
    not propagate and keep gunicorn's format.
    """
    logging.getLogger("inbox").setLevel(level)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_inbox", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._inbox = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(formatter(log_format))
