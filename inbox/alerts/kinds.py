"""The alert kinds: when each is raised, and the line a person reads.

Every message's payload is `{"text", "kind", "count", "ids", "since", ...}`; `text` makes
Slack-, Mattermost- and Discord-style incoming webhooks show it as it is, and names the
command or console page to look at next.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inbox.config import Settings

# At most this many example ids ride in a message.
MAX_IDS = 5
# Signature failures are a storm when more than the threshold arrive within this window.
SIGNATURE_WINDOW_SECONDS = 300.0

TextFn = Callable[[int, Sequence[str], Mapping[str, Any]], str]


@dataclass(frozen=True)
class AlertKind:
    """One kind of alert. `threshold`: held occurrences must exceed it before a message
    goes; `window_seconds`: held occurrences that began longer ago than this without
    reaching the threshold are forgotten (None: never)."""

    name: str
    text: TextFn
    threshold: int = 0
    window_seconds: float | None = None

    @property
    def topic(self) -> str:
        return f"inbox.alert.{self.name}"


def _examples(ids: Sequence[str]) -> str:
    return f" (e.g. {', '.join(ids)})" if ids else ""


def _event_dead(count: int, ids: Sequence[str], detail: Mapping[str, Any]) -> str:
    return (f"{count} webhook event(s) went dead{_examples(ids)}: their handler failed for good."
            " See `inbox events list --status dead` or /console/events?status=dead; replay"
            " with `inbox replay --status dead` once fixed.")


def _message_dead(count: int, ids: Sequence[str], detail: Mapping[str, Any]) -> str:
    return (f"{count} outbox message(s) went dead{_examples(ids)}: their destination refused"
            " them or never answered. See `inbox replay --outbox --status dead --dry-run` or"
            " /console/outbox?status=dead.")


def _backlog(count: int, ids: Sequence[str], detail: Mapping[str, Any]) -> str:
    waited = round(float(detail.get("oldest_seconds", 0)))
    return (f"The inbox backlog is {waited} s old: {count} event(s) due and waiting"
            f"{_examples(ids)}. Are the workers running and keeping up? See `inbox status`"
            " or /console/.")


def _signature_failures(count: int, ids: Sequence[str], detail: Mapping[str, Any]) -> str:
    providers = ", ".join(sorted(set(ids))) or "a provider"
    return (f"{count} webhook deliveries from {providers} were rejected for a bad signature"
            " within minutes: a signing secret was probably rotated without updating"
            " STRIPE_WEBHOOK_SECRET (or a provider's), or someone is probing the endpoint."
            " The providers retry for days; fix the secret and they arrive.")


def all_kinds(settings: Settings) -> dict[str, AlertKind]:
    """Every kind, with this deployment's thresholds."""
    kinds = [
        AlertKind("event_dead", _event_dead),
        AlertKind("message_dead", _message_dead),
        AlertKind("backlog", _backlog),
        AlertKind("signature_failures", _signature_failures,
                  threshold=settings.alert_signature_failures,
                  window_seconds=SIGNATURE_WINDOW_SECONDS),
    ]
    return {kind.name: kind for kind in kinds}


def payload(kind: AlertKind, count: int, ids: Sequence[str], detail: Mapping[str, Any],
            since: str | None) -> dict[str, Any]:
    """The message's payload (the contract's fields first, then the kind's detail)."""
    return {"text": kind.text(count, ids, detail), "kind": kind.name, "count": count,
            "ids": list(ids), "since": since, **detail}
