"""app.json (the Heroku app's description) agrees with the Procfile, the README's
configuration table and .python-version, so a one-click deploy gets what the docs say."""

from __future__ import annotations

import json
import tomllib

from inbox.cli.dev import procfile_commands
from tests.support import REPO

APP = json.loads((REPO / "app.json").read_text())
# Set by the platform, not by the person deploying: the add-on sets DATABASE_URL, the dyno
# manager PORT.
PLATFORM_VARS = {"DATABASE_URL", "PORT"}
# Facts of the Heroku platform that differ from the code's default: its router is one proxy
# hop (the default, 0, is right for a process nobody proxies).
HEROKU_VALUES = {"INBOX_TRUSTED_PROXY_HOPS": "1"}


def readme_configuration() -> dict[str, tuple[str, str]]:
    """{variable: (meaning, default)} of the README's Configuration table."""
    section = (REPO / "README.md").read_text().split("\n## Configuration\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    table = {}
    for row in section.splitlines():
        if row.startswith("| `"):
            name, meaning, default = (cell.strip() for cell in row.strip("|").split("|"))
            table[name.strip("`")] = (meaning.replace("`", ""), default.replace("`", ""))
    return table


def test_the_formation_is_the_procfiles_process_types():
    types = set(procfile_commands(REPO / "Procfile")) - {"release"}  # a phase, not a dyno
    assert set(APP["formation"]) == types == {"web", "worker", "relay"}
    assert all(dyno["quantity"] >= 1 for dyno in APP["formation"].values())


def test_the_database_is_the_postgres_add_on():
    plans = [addon["plan"] if isinstance(addon, dict) else addon for addon in APP["addons"]]
    assert [plan.split(":")[0] for plan in plans] == ["heroku-postgresql"]


def test_config_vars_are_the_readme_table():
    table = readme_configuration()
    assert set(table) >= PLATFORM_VARS
    assert set(APP["env"]) == set(table) - PLATFORM_VARS
    for name, var in APP["env"].items():
        meaning, default = table[name]
        assert var["description"].lower().startswith(meaning.lower()), name
        if default:
            assert var["description"].endswith(f"(default: {default})"), name
        assert var["required"] is (name == "STRIPE_WEBHOOK_SECRET"), name
        # Elsewhere the code's default serves; app.json does not freeze it.
        assert var.get("value") == HEROKU_VALUES.get(name), name


def test_python_version_is_the_projects():
    version = (REPO / ".python-version").read_text().strip()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert version == "3.11"
    assert pyproject["project"]["requires-python"] == f">={version}"
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + version.replace(".", "")
    assert "--python-version 3.11" in (REPO / ".ci" / "lock").read_text()
