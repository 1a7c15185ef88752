"""A regular (non-editable) install finds the SQL too, and gives the `inbox` script; so does
the checkout's `inbox/` when it shadows the installed package (run from the repository root,
as a dyno runs the Procfile: `python -c` and gunicorn put the working directory first)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support import REPO


def test_wheel_carries_sql_and_console_script(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True, timeout=180,
    )
    wheel = next(tmp_path.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "inbox/sql/migrations/0001_inbox_outbox.sql" in names
    assert "inbox/sql/queries/receiver.sql" in names
    assert "inbox/stripe/webhook_ips.json" in names  # the allowlist's shipped list
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "inbox = inbox.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=180)
    installed = probe_sql(cwd=tmp_path, pythonpath=target)
    assert installed["module"].startswith(str(target))
    assert installed["sql_dir"] == str(target / "inbox" / "sql")
    assert installed["migrations"] >= 1 and installed["insert"]

    shadowed = probe_sql(cwd=REPO, pythonpath=target)  # the checkout's inbox/ comes first
    assert shadowed["module"] == str(REPO / "inbox" / "queries.py")
    assert shadowed["sql_dir"] == str(REPO / "sql")
    assert shadowed["migrations"] == installed["migrations"] and shadowed["insert"]


def probe_sql(cwd: Path, pythonpath: Path) -> dict:
    """Which `inbox` a fresh interpreter imports from `cwd`, and the SQL it finds."""
    probe = subprocess.run(
        [sys.executable, "-c",
         "import json, inbox.queries as q; print(json.dumps({'module': q.__file__,"
         " 'sql_dir': str(q.sql_dir()), 'migrations': len(q.migration_files()),"
         " 'insert': 'ON CONFLICT (provider, event_id)' in q.query('inbox_insert')}))"],
        capture_output=True, text=True, cwd=cwd, env={"PYTHONPATH": str(pythonpath)},
        check=True,
    )
    return json.loads(probe.stdout)
