"""A regular (non-editable) install finds the SQL too, and gives the `inbox` script."""

from __future__ import annotations

import subprocess
import sys
import zipfile

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
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "inbox = inbox.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=180)
    probe = subprocess.run(
        [sys.executable, "-c",
         "import inbox.queries as q; print(q.__file__); print(len(q.migration_files()));"
         "print('ON CONFLICT (provider, event_id)' in q.query('inbox_insert'))"],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(target)},
        check=True,
    )
    module_file, migrations, insert = probe.stdout.splitlines()
    assert module_file.startswith(str(target))
    assert int(migrations) >= 1
    assert insert == "True"
