"""Exceptions of the inbox. Each docstring is the default message."""

from __future__ import annotations


class InboxError(Exception):
    """Something went wrong in the webhook inbox."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class DatabaseUnavailable(InboxError):
    """The database cannot take the request right now (down, pool exhausted or too slow)."""


class InvalidSignature(InboxError):
    """The webhook signature is missing, malformed, stale or does not match."""


class InvalidEvent(InboxError):
    """The body is not a valid event."""


class UnknownProvider(InboxError):
    """No such webhook provider."""


class Permanent(InboxError):
    """The handler declared this event can never succeed: it goes to `dead` at once.

    Raise it from a handler for input that no retry can fix (a malformed object, a
    business rule that rejects the event). Every other exception is retried.
    """
