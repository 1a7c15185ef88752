"""A transactional inbox and outbox for webhooks, on PostgreSQL alone."""

from inbox.errors import Permanent

__all__ = ["Permanent"]
