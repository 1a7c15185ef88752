"""/metrics under the Procfile's web line: gunicorn's processes add up, and two separate
web servers describe the same system."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inbox.cli.dev import procfile_commands
from tests.support import REPO, TEST_SECRET, free_port, stripe_event_files
from tests.test_procfile_web import post, wait_until_healthy

TOKEN = "procfile-metrics-token"


@contextmanager
def web_server(database_url: str, **extra_env: str):
    """The Procfile's web line with two processes; its base URL."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": database_url,
           "STRIPE_WEBHOOK_SECRET": TEST_SECRET, "WEB_CONCURRENCY": "2",
           "INBOX_METRICS_TOKEN": TOKEN,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           **extra_env}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # `exec`: the shell becomes gunicorn, so waiting for it waits for gunicorn's exit (its
    # workers' goodbyes included), not for a shell that a SIGTERM ends at once.
    command = "exec " + procfile_commands(REPO / "Procfile")["web"]
    process = subprocess.Popen(command, shell=True,
                               cwd=REPO, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def scrape(base: str) -> dict[str, dict[str, float]]:
    """{sample name: {"label=value,...": value}} of one scrape."""
    request = urllib.request.Request(f"{base}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[key] = sample.value
    return found


@pytest.mark.slow
def test_two_web_servers_of_two_processes_each_agree(database_url):
    template = stripe_event_files()[0].read_bytes()
    bodies = [template.replace(b'"evt_', f'"evt_scrape{n}_'.encode(), 1) for n in range(60)]
    with ExitStack() as stack:
        first = stack.enter_context(web_server(database_url))
        second = stack.enter_context(web_server(database_url))
        with concurrent.futures.ThreadPoolExecutor(16) as threads:
            answers = list(threads.map(lambda body: post(first, body), bodies))
        assert [status for status, _ in answers] == [200] * 60

        # Each scrape reaches one of the first server's processes; every one of them
        # reports the answers of both.
        for _ in range(6):
            figures = scrape(first)
            assert figures["inbox_webhook_requests_total"]["outcome=stored,provider=stripe"] == 60
            assert figures["inbox_group_commit_events_sum"][""] == 60  # events per insert
        # The second server answered no webhook, yet describes the same system.
        other = scrape(second)
        assert other["inbox_events"] == figures["inbox_events"]
        assert other["inbox_events"]["status=pending"] == 60
        assert "outcome=stored,provider=stripe" not in other.get("inbox_webhook_requests_total",
                                                                 {})
