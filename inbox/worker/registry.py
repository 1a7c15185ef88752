"""The handler registry: which function handles a (provider, event type).

Handlers register with the `@handler(provider, event_type)` decorator when their module is
imported; the worker imports the modules named in INBOX_HANDLERS at start-up
(`load_handlers`). Two handlers for one (provider, event type) is an error at start-up, never
a silent override.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from inbox.errors import InboxError

HandlerFunc = Callable[[Any, Any], Any]
# What a handler may have fetched before its batch begins: a Stripe thin event's full event
# and related object (inbox/stripe/thin.py, StripeFetch.prefetch).
PREFETCHABLE = frozenset({"event", "related_object"})


class DuplicateHandler(InboxError):
    """Two handlers are registered for the same (provider, event type)."""


class HandlerImportError(InboxError):
    """A module named in INBOX_HANDLERS cannot be imported."""


class Registry:
    """Handlers by (provider, event type)."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], HandlerFunc] = {}
        self._prefetch: dict[tuple[str, str], frozenset[str]] = {}

    def register(self, provider: str, event_type: str, func: HandlerFunc, *,
                 prefetch: Collection[str] = ()) -> HandlerFunc:
        """`prefetch`: for a Stripe thin event, "event" and/or "related_object", fetched
        before the batch's transaction begins (inbox/stripe/thin.py)."""
        key = (provider, event_type)
        unknown = set(prefetch) - PREFETCHABLE
        if isinstance(prefetch, str) or unknown:
            raise ValueError(f"prefetch takes a collection of {sorted(PREFETCHABLE)}, "
                             f"not {prefetch!r}")
        existing = self._handlers.get(key)
        if existing is not None and _origin(existing) != _origin(func):
            raise DuplicateHandler(
                f"two handlers for {provider} {event_type!r}: {_origin(existing)} and "
                f"{_origin(func)}"
            )
        # The same function registering again is its module being imported again (a reload,
        # or imported under two names by a test): the newer definition wins.
        self._handlers[key] = func
        self._prefetch[key] = frozenset(prefetch)
        return func

    def handler(self, provider: str, event_type: str, *, prefetch: Collection[str] = ()
                ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Decorator: `@registry.handler("stripe", "invoice.paid")`."""

        def decorate(func: HandlerFunc) -> HandlerFunc:
            return self.register(provider, event_type, func, prefetch=prefetch)

        return decorate

    def lookup(self, provider: str, event_type: str) -> HandlerFunc | None:
        """The handler for this event, or None (the event is then `ignored`)."""
        return self._handlers.get((provider, event_type))

    def prefetch_of(self, provider: str, event_type: str) -> frozenset[str]:
        """What the handler of this event wants fetched before its batch begins."""
        return self._prefetch.get((provider, event_type), frozenset())

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(sorted(self._handlers))

    def __len__(self) -> int:
        return len(self._handlers)


# The registry `@inbox.handler` fills. The worker uses it unless given another (tests do).
default_registry = Registry()


def handler(provider: str, event_type: str, *, prefetch: Collection[str] = ()
            ) -> Callable[[HandlerFunc], HandlerFunc]:
    """Register the decorated function as the handler of (provider, event type).

    ```python
    @handler("stripe", "invoice.paid")
    def invoice_paid(event, tx): ...
    ```
    `prefetch=("event", "related_object")` (Stripe thin events): what
    `event.stripe_event()` / `event.related_object()` return is fetched before the batch
    begins, several events' at once, instead of at the handler's call.
    """
    return default_registry.handler(provider, event_type, prefetch=prefetch)


def load_handlers(modules: Iterable[str]) -> Registry:
    """Import the handler modules (their `@handler` decorators fill the default registry).

    The working directory is put on sys.path first, as gunicorn does, so `INBOX_HANDLERS=
    handlers` finds the application's `handlers/` package when run from the app's root.
    """
    add_cwd_to_path()
    for name in modules:
        try:
            importlib.import_module(name)
        except DuplicateHandler:
            raise
        except Exception as exc:
            raise HandlerImportError(
                f"cannot import handler module {name!r} (INBOX_HANDLERS): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return default_registry


def add_cwd_to_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def migrations_folder(module: str) -> tuple[str, Path] | None:
    """(owner, folder) of the `migrations/` folder next to a handler module, if any.

    For a package (`handlers`) it is `handlers/migrations/`, owned by `handlers`; for a
    module inside a package (`app.hooks`) it is `app/migrations/`, owned by `app`. Found
    without importing the module, so `inbox migrate` runs no handler code.
    """
    return package_folder(module, "migrations")


def seeds_folder(module: str) -> tuple[str, Path] | None:
    """(owner, folder) of the `seeds/` folder next to a handler module (development data
    that only `inbox dev` applies), found like `migrations_folder`."""
    return package_folder(module, "seeds")


def package_folder(module: str, name: str) -> tuple[str, Path] | None:
    """(owner, folder) of the folder `name` in a handler module's package, if any."""
    add_cwd_to_path()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin).resolve()
    # A package's migrations/ sits inside it; a module's beside it, owned by its package.
    owner = module if spec.submodule_search_locations else module.rpartition(".")[0] or module
    folder = origin.parent / name
    return (owner, folder) if folder.is_dir() else None


def _origin(func: HandlerFunc) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"
