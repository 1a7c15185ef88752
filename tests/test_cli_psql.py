"""`inbox psql`: psql on the configured database, with the audit views at hand."""

from __future__ import annotations

from tests import audit_sample
from tests.cli_support import cli_env, inbox


def test_psql_runs_on_the_configured_database(database_url, db, tmp_path):
    audit_sample.build(db)
    env = cli_env(tmp_path, DATABASE_URL=database_url)
    result = inbox("psql", "--", "-X", "-A", "-t", "-c",
                   "SELECT sum(events) FROM inbox_summary", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "7"


def test_print_url(database_url, tmp_path):
    result = inbox("psql", "--print-url", env=cli_env(tmp_path, DATABASE_URL=database_url))
    assert result.returncode == 0 and result.stdout.strip() == database_url


def test_psql_exit_status_is_passed_on(database_url, tmp_path):
    env = cli_env(tmp_path, DATABASE_URL=database_url)
    result = inbox("psql", "--", "-X", "-v", "ON_ERROR_STOP=1", "-c", "SELECT nope", env=env)
    assert result.returncode != 0 and "nope" in result.stderr
