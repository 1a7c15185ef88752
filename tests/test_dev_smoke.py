"""`inbox dev` end to end, the way the README tells a newcomer to use it.

No DATABASE_URL: `inbox dev` starts the embedded PostgreSQL (data in INBOX_DEV_DIR), applies
the example app's seed (the story's customer) and runs web, worker and relay;
`send-test-event --all` sends the billing story, with nothing added by hand; `inbox status
--json` sees all of it processed and its messages sent; Ctrl-C (SIGINT to the process
group, as a terminal sends it) stops everything, the embedded server included; a second
start finds the data again. SIGINT or SIGTERM sent to the `inbox dev` process alone (a
process manager, `kill PID`) stops everything it started just as well, and no start or stop
prints a traceback or a logging error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cli_support import INBOX, cli_env, inbox
from tests.support import REPO, free_port, wait_for

pytestmark = pytest.mark.slow

START_DEADLINE_SECONDS = 90
PROCESSED_DEADLINE_SECONDS = 60
STOP_DEADLINE_SECONDS = 30
FIXTURE_CUSTOMER = "cus_QXg1o8vcGmoR32"  # the story's customer: handlers/seeds/ adds it


def start_dev(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([INBOX, "dev", "--port", str(port)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"inbox dev exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:  # refused, reset, timed out (URLError is an OSError too)
            pass
        time.sleep(0.3)
    raise AssertionError(f"inbox dev was not ready in time:\n{log.read_text()}")


def stop_dev(process: subprocess.Popen) -> int:
    """Ctrl-C; kill the group only if it does not stop in time (then fail)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        raise AssertionError("inbox dev did not stop on SIGINT") from None


def status(env: dict[str, str]) -> dict:
    result = inbox("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def servers_using(pgdata: Path) -> list[int]:
    """Pids of processes (postgres servers) whose command line names this data folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(pgdata) in cmdline and "postgres" in cmdline:
            found.append(int(entry.name))
    return found


def wait_no_server(pgdata: Path) -> None:
    deadline = time.monotonic() + STOP_DEADLINE_SECONDS
    while servers_using(pgdata) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert servers_using(pgdata) == [], "the embedded PostgreSQL is still running"


@pytest.fixture
def dev_dir():
    """A project-local dev folder of our own: outside pytest's basetemp (0700, and pruned
    by concurrent pytest sessions), traversable by the unprivileged server user."""
    folder = Path(tempfile.mkdtemp(prefix="inbox-dev-smoke-"))
    folder.chmod(0o755)
    yield folder / ".inbox"
    shutil.rmtree(folder, ignore_errors=True)


def test_dev_runs_the_story_and_keeps_its_data(dev_dir, tmp_path):
    pgdata = dev_dir / "pgdata"
    env = cli_env(dev_dir)  # no DATABASE_URL, no STRIPE_WEBHOOK_SECRET
    port = free_port()
    log = tmp_path / "dev.log"

    process = start_dev(env, port, log)
    try:
        wait_ready(port, process, log)
        sent = inbox("send-test-event", "--all", env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.count("200 ") == 9 and f"localhost:{port}" in sent.stdout

        deadline = time.monotonic() + PROCESSED_DEADLINE_SECONDS
        while True:
            now = status(env)
            if now["inbox"]["processed"] == 9 and now["outbox"]["pending"] == 0:
                break
            assert time.monotonic() < deadline, f"not processed in time: {now}\n{log.read_text()}"
            time.sleep(0.5)
        assert now["inbox"]["pending"] == now["inbox"]["dead"] == now["inbox"]["ignored"] == 0
        assert now["outbox"]["dead"] == 0
        # The handlers' emails and the shipment, through the log: route (the dunning email
        # only if the payment failure was handled before the payment).
        assert now["outbox"]["sent"] >= 4
        # The seeded customer went through the whole story: subscribed, paid, canceled
        # (through `inbox psql`, which finds the dev database by itself too).
        user = inbox("psql", "--", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c",
                     "SELECT plan, plan_status FROM app_users "
                     f"WHERE stripe_customer_id = '{FIXTURE_CUSTOMER}'", env=env)
        assert user.returncode == 0 and user.stdout.strip() == "free|canceled", user
        listed = inbox("events", "list", "--json", env=env)
        event_ids = {e["event_id"] for e in json.loads(listed.stdout)}
        assert len(event_ids) == 9
    finally:
        returncode = stop_dev(process)
    wait_no_server(pgdata)
    assert returncode in (0, 130)  # 130: the conventional status after Ctrl-C

    # Again: the same database, the same events.
    process = start_dev(env, port, log)
    try:
        wait_ready(port, process, log)
        assert status(env)["inbox"]["processed"] == 9
        listed = inbox("events", "list", "--json", env=env)
        assert {e["event_id"] for e in json.loads(listed.stdout)} == event_ids
        assert_console_login(port, log.read_text())
    finally:
        stop_dev(process)
    wait_no_server(pgdata)
    assert "Signing secret:" in log.read_text()
    assert "Demo data:       handlers/seeds/0001_demo_customer.sql" in log.read_text()
    assert_clean(log.read_text())


def assert_console_login(port: int, banner: str) -> None:
    """The banner's console URL and password sign in (the newest banner: this run's)."""
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    url = re.findall(r"Console:\s+(http://\S+)", banner)[-1]
    password = re.findall(r"Console password: (\S+)", banner)[-1]
    assert url == f"http://localhost:{port}/console/"
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = opener.open(url, timeout=10).read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"password": password, "csrf_token": token}).encode()
    overview = opener.open(f"{url}login", data=form, timeout=10).read().decode()
    assert "Overview" in overview and 'type="password"' not in overview


def assert_clean(output: str) -> None:
    for failure in ("Traceback", "Logging error"):
        assert failure not in output, f"inbox dev printed {failure!r}:\n{output}"


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """The pids that still name a running (not zombie) process."""
    running = set()
    for pid in pids:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_dev_process_alone_stops_everything(dev_dir, tmp_path, signum):
    pgdata = dev_dir / "pgdata"
    port = free_port()
    log = tmp_path / "dev.log"
    process = start_dev(cli_env(dev_dir), port, log)
    try:
        wait_ready(port, process, log)
        started = descendants(process.pid)  # honcho's shells, gunicorn, supervisors, children
        assert len(started) >= 6, started
        assert servers_using(pgdata)
        os.kill(process.pid, signum)  # the process alone, not its group
        returncode = process.wait(timeout=STOP_DEADLINE_SECONDS)
    finally:
        if process.poll() is None or alive(descendants(process.pid)):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert returncode in (0, 130, 143), returncode
    wait_for(lambda: not alive(started), "the processes inbox dev started to exit",
             timeout=STOP_DEADLINE_SECONDS)
    wait_no_server(pgdata)
    assert_clean(log.read_text())
