"""A transactional inbox and outbox for webhooks, on PostgreSQL alone."""

from inbox.errors import Permanent
from inbox.worker.registry import handler

__all__ = ["Permanent", "handler"]
