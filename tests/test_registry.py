"""The handler registry: registration, duplicates, loading INBOX_HANDLERS, migrations folders."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import inbox
from inbox.worker.registry import (
    DuplicateHandler,
    HandlerImportError,
    Registry,
    load_handlers,
    migrations_folder,
)
from tests.support import REPO


def first(event, tx):
    pass


def second(event, tx):
    pass


def test_handlers_are_found_by_provider_and_type():
    registry = Registry()
    registry.register("stripe", "invoice.paid", first)
    assert registry.lookup("stripe", "invoice.paid") is first
    assert registry.lookup("stripe", "invoice.voided") is None
    assert registry.lookup("github", "invoice.paid") is None
    assert list(registry) == [("stripe", "invoice.paid")] and len(registry) == 1


def test_two_handlers_for_one_type_is_an_error_not_an_override():
    registry = Registry()
    registry.register("stripe", "invoice.paid", first)
    with pytest.raises(DuplicateHandler, match=r"invoice\.paid.*first.*second"):
        registry.register("stripe", "invoice.paid", second)
    assert registry.lookup("stripe", "invoice.paid") is first


def test_the_same_function_registering_again_is_a_reimport():
    registry = Registry()
    registry.register("stripe", "invoice.paid", first)
    registry.register("stripe", "invoice.paid", first)
    assert registry.lookup("stripe", "invoice.paid") is first


def test_the_public_decorator_fills_the_default_registry():
    assert inbox.handler is not None and "handler" in inbox.__all__

    @inbox.handler("test-registry", "decorated")
    def decorated(event, tx):
        pass

    from inbox.worker.registry import default_registry

    assert default_registry.lookup("test-registry", "decorated") is decorated


def test_load_handlers_imports_modules_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "cwd_handlers.py").write_text(textwrap.dedent("""
        from inbox import handler

        @handler("test-registry", "from.cwd")
        def from_cwd(event, tx):
            pass
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    registry = load_handlers(["cwd_handlers"])
    assert registry.lookup("test-registry", "from.cwd") is not None


def test_a_module_that_cannot_be_imported_is_a_clear_error():
    with pytest.raises(HandlerImportError, match="no_such_handlers_module"):
        load_handlers(["no_such_handlers_module"])


def test_migrations_folders_of_a_package_and_of_a_module(tmp_path, monkeypatch):
    (tmp_path / "apppkg" / "migrations").mkdir(parents=True)
    (tmp_path / "apppkg" / "__init__.py").write_text("")
    (tmp_path / "apppkg" / "hooks.py").write_text("")
    (tmp_path / "bare.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "apppkg" / "migrations"
    assert migrations_folder("apppkg") == ("apppkg", folder)
    assert migrations_folder("apppkg.hooks") == ("apppkg", folder)  # beside the module
    assert migrations_folder("bare") is None  # no migrations/ beside it
    assert migrations_folder("not_there_at_all") is None
    assert migrations_folder("handlers") == ("handlers", REPO / "handlers" / "migrations")


def test_the_worker_refuses_to_start_with_duplicate_handlers(tmp_path, database_url):
    (tmp_path / "dup_handlers.py").write_text(textwrap.dedent("""
        from inbox import handler

        @handler("stripe", "invoice.paid")
        def one(event, tx):
            pass

        @handler("stripe", "invoice.paid")
        def two(event, tx):
            pass
    """))
    result = subprocess.run(
        [sys.executable, "-m", "inbox.cli", "worker"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "DATABASE_URL": database_url,
             "INBOX_HANDLERS": "dup_handlers"},
    )
    assert result.returncode == 1
    assert "two handlers for stripe 'invoice.paid'" in result.stderr
    assert "dup_handlers.one" in result.stderr and "dup_handlers.two" in result.stderr
