"""Named SQL queries, loaded from the `.sql` files in `sql/queries/`.

Each statement in those files starts with a header line `-- name: <entity>_<verb>`; the
comment lines after the header document it. Runtime code never carries SQL strings of its
own: it asks for a query by name, so "where is the claim query" has one answer.

A line `-- include: <name>` stands for the text of that named query: a condition shared by
several statements (the console's events filter) is written once. The SQL each statement
sends is still whole and fixed, so plans and prepared statements are what they were.

The SQL folder is found by path, beside the imported package (`sql_dir`), not imported as a
module: see docs/decisions.md, "SQL found beside the imported package".
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^[ \t]*--\s*include:\s*(\w+)\s*$", re.MULTILINE)


class UnknownQuery(KeyError):
    """No query of that name in sql/queries/*.sql."""


class MissingSQL(FileNotFoundError):
    """The SQL folder is neither beside the imported package nor in its checkout."""


@functools.cache
def sql_dir() -> Path:
    """The folder holding `migrations/` and `queries/`: the installed package's `inbox/sql/`
    (package data of the wheel, mapped from the repository's sql/ by pyproject.toml), else
    the checkout's `sql/`, at the top of the repository next to `inbox/`.

    Looked up beside whichever `inbox` was imported, because that is not always the
    installed one: run from the repository root, as a dyno runs the Procfile, gunicorn (and
    `python -m`) put the working directory first on sys.path, so the checkout's `inbox/`
    shadows the installed package, and the installed module `inbox.sql` is not there. The
    same two places cover an editable install (the checkout) and a wheel run anywhere.
    """
    package = Path(__file__).resolve().parent
    candidates = (package / "sql", package.parent / "sql")
    for candidate in candidates:
        if (candidate / "queries").is_dir() and (candidate / "migrations").is_dir():
            return candidate
    raise MissingSQL(f"no SQL folder in {' or '.join(map(str, candidates))}")


def parse_queries(text: str) -> dict[str, str]:
    """Split one `.sql` file into {name: statement}; raise on a name defined twice."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@functools.cache
def all_queries() -> dict[str, str]:
    """Every named query of every file in sql/queries/, read once per process."""
    queries: dict[str, str] = {}
    for entry in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, statement in parse_queries(entry.read_text(encoding="utf-8")).items():
            if name in queries:
                raise ValueError(f"query {name!r} is defined in two files")
            queries[name] = statement
    return {name: _expand(statement, queries) for name, statement in queries.items()}


def _expand(statement: str, queries: dict[str, str]) -> str:
    """The statement with each `-- include: name` line replaced by that query's text (one
    level: an included fragment includes nothing)."""
    def fragment(match: re.Match[str]) -> str:
        try:
            return queries[match.group(1)].rstrip(";")
        except KeyError:
            raise UnknownQuery(f"{match.group(1)} (included)") from None

    return _INCLUDE.sub(fragment, statement)


def query(name: str) -> str:
    """The SQL of the query called `name`."""
    try:
        return all_queries()[name]
    except KeyError:
        raise UnknownQuery(name) from None


def migration_files() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for each sql/migrations/NNNN_*.sql, in version order."""
    found = []
    for entry in (sql_dir() / "migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a number: {versions}")
    return found
