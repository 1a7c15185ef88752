"""The console in a real browser: Debian's chromium driven by Selenium, against the web
app on a loopback port and a real `inbox worker` process.

Log in, see the overview's counts match the database, filter to dead events, open one,
replay it and see it processed, bulk-replay a failure group, and open an event whose
payload holds script, markup and javascript: links: they show as text and run nothing.
A screenshot of each page is saved in the folder this test prints (CONSOLE_SCREENSHOTS
to choose it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inbox.web import create_app
from tests.console_support import PASSWORD, XSS_PAYLOAD
from tests.support import serve_wsgi, wait_for
from tests.worker_support import EFFECTS_TABLE, WorkerProcesses, insert_events, write_handlers

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000", "--disable-dev-shm-usage")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="chromium and chromium-driver are not installed (.ci/run does)"),
]


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = [int(c) for c in (task / "children").read_text().split()]
                found.extend(children)
                stack.extend(children)
    return found


@pytest.fixture(scope="session")
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="inbox-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER))  # no selenium-manager download
    driver = webdriver.Chrome(service=service, options=options)
    driver_pid = service.process.pid
    started = _descendants(driver_pid)
    try:
        yield driver
    finally:
        driver.quit()
        for pid in [driver_pid, *started]:  # only what this fixture started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(profile, ignore_errors=True)
        for pid in [driver_pid, *started]:
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists()
                     or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
                     what=f"browser process {pid} gone", timeout=10)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS")
                  or tempfile.mkdtemp(prefix="inbox-console-screens-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


@pytest.fixture
def console_url(settings, clock) -> Iterator[str]:
    app = create_app(dataclasses.replace(settings, console_password=PASSWORD), clock=clock)
    try:
        with serve_wsgi(app) as url:
            yield url
    finally:
        app.extensions["inbox.database"].close()


@pytest.fixture
def worker(database_url, tmp_path, db) -> Iterator[WorkerProcesses]:
    db.execute(EFFECTS_TABLE)
    write_handlers(tmp_path)
    processes = WorkerProcesses(database_url, tmp_path)
    try:
        yield processes
    finally:
        processes.kill_all()


def shot(driver, folder: Path, name: str) -> None:
    driver.save_screenshot(str(folder / f"{name}.png"))


def log_in(driver, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{url}/console/")
    driver.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys("wrong")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    see(driver, "Wrong password")
    assert not driver.find_elements(By.LINK_TEXT, "Events")
    driver.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(lambda: driver.find_elements(By.LINK_TEXT, "Events"), what="signed in")


def see(driver, text: str) -> None:
    """Wait until the page shows `text`: a click navigates, and the page read right after
    it may still be the one it replaces (seen under load)."""
    wait_for(lambda: text in driver.page_source, what=f"a page showing {text!r}")


def status_of(db, event_id: str) -> str:
    return db.execute("SELECT status FROM inbox WHERE event_id = %s", [event_id]).fetchone()[0]


def test_operator_story_in_a_browser(browser, console_url, worker, db, screenshots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    insert_events(db, "effect", 40, prefix="evt_ok")
    dead = insert_events(db, "effect", 6, prefix="evt_dead")
    db.execute("UPDATE inbox SET status = 'dead', attempts = 16,"
               " last_error = 'LookupError: unknown customer cus_123' WHERE event_id = ANY(%s)",
               [dead])
    db.execute("UPDATE inbox SET status = 'processed', processed_at = now()"
               " WHERE event_id LIKE 'evt_ok%%'")
    db.execute("INSERT INTO inbox_attempts (inbox_id, attempt, worker, started_at, finished_at,"
               " outcome, error) SELECT id, 1, 'worker.1:4242', now() - interval '2 minutes',"
               " now() - interval '2 minutes' + interval '40 ms', CASE WHEN status = 'dead'"
               " THEN 'dead' ELSE 'processed' END, last_error FROM inbox")

    log_in(driver, console_url)
    counts = dict(db.execute("SELECT status, count(*) FROM inbox GROUP BY status").fetchall())
    shown = {cell.get_attribute("data-status"): int(cell.text.replace(",", ""))
             for cell in driver.find_elements(By.CSS_SELECTOR, "#inbox-counts td.num")}
    assert {k: v for k, v in shown.items() if v} == counts
    shot(driver, screenshots, "1-overview")

    driver.find_element(By.LINK_TEXT, "Events").click()
    Select(driver.find_element(By.NAME, "status")).select_by_value("dead")
    driver.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait_for(lambda: "status=dead" in driver.current_url, what="the filtered list")
    rows = driver.find_elements(By.CSS_SELECTOR, "table.events tbody tr")
    assert len(rows) == len(dead)
    shot(driver, screenshots, "2-events-dead")

    driver.find_element(By.LINK_TEXT, dead[-1]).click()
    shot(driver, screenshots, "3-event")
    worker.start()
    button = driver.find_element(By.XPATH, "//button[contains(., 'Replay')]")
    button.click()
    see(driver, "pending again")
    wait_for(lambda: status_of(db, dead[-1]) == "processed", what="replayed event processed")
    driver.refresh()
    assert "processed" in driver.find_element(By.CSS_SELECTOR, "dl.kv dd span").text

    driver.find_element(By.LINK_TEXT, "Failures").click()
    shot(driver, screenshots, "4-failures")
    driver.find_element(By.PARTIAL_LINK_TEXT, "Replay these").click()
    see(driver, "Replay 5 events?")
    shot(driver, screenshots, "5-replay-confirm")
    driver.find_element(By.CSS_SELECTOR, "button.primary").click()
    see(driver, "Replayed 5 events")
    wait_for(lambda: all(status_of(db, e) == "processed" for e in dead),
             what="the failure group processed")
    assert db.execute("SELECT action, affected FROM inbox_console_actions ORDER BY id"
                      ).fetchall() == [("replay_event", 1), ("replay_events", 5)]

    driver.find_element(By.LINK_TEXT, "Overview").click()
    shot(driver, screenshots, "6-overview-after")
    driver.find_element(By.LINK_TEXT, "Outbox").click()
    shot(driver, screenshots, "7-outbox")


def test_customer_text_shows_as_text_and_runs_nothing(browser, console_url, db, screenshots):
    from selenium.webdriver.common.by import By

    driver = browser
    [event_id] = insert_events(db, "invoice.paid", 1, prefix="evt_xss", payload=XSS_PAYLOAD)
    db.execute("UPDATE inbox SET status = 'dead', attempts = 1, last_error = %s,"
               " event_type = %s", [XSS_PAYLOAD["name"], XSS_PAYLOAD["note"]])
    log_in(driver, console_url)
    for path in (f"/console/events/{event_id}", "/console/events?status=dead",
                 "/console/failures", "/console/"):
        driver.get(console_url + path)
        assert driver.title != "pwned"
        assert driver.execute_script("return document.title") != "pwned"
        assert not driver.find_elements(By.CSS_SELECTOR, "main img")
        assert not driver.find_elements(By.CSS_SELECTOR, "main script")
        assert not driver.find_elements(By.CSS_SELECTOR, "a[href^='javascript']")
    driver.get(f"{console_url}/console/events/{event_id}")
    payload = driver.find_element(By.CSS_SELECTOR, "pre.payload").text
    assert "<script>document.title='pwned'</script>" in payload
    assert "javascript:document.title='pwned'" in payload
    shot(driver, screenshots, "8-xss-as-text")
