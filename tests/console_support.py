"""Helpers of the console tests: an app with the console on, a signed-in client."""

from __future__ import annotations

import re

PASSWORD = "console-password-for-the-tests"
XSS_PAYLOAD = {
    "note": "<script>document.title='pwned'</script>",
    "name": "\"><img src=x onerror=\"document.title='pwned'\">",
    "link": "javascript:document.title='pwned'",
    "html": "<a href=\"javascript:document.title='pwned'\">click</a>",
}
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _TOKEN.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def log_in(client, password: str = PASSWORD):
    page = client.get("/console/")
    assert page.status_code == 200
    return client.post("/console/login", data={
        "password": password, "csrf_token": csrf_of(page.get_data(as_text=True))})


def token(client, path: str = "/console/") -> str:
    return csrf_of(client.get(path).get_data(as_text=True))
