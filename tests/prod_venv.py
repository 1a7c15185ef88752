"""A production virtualenv: `pip install -r requirements.txt` into a venv with nothing else,
as a Heroku-style build installs the app (not editable, no extras, the lock's pins).

Building one from pip's cache costs tens of seconds, so the venv is kept between runs under
`.cache/prod-venv/<key>` (git-ignored), keyed by the lock and the Python version: the pins
are installed once per lock. The project itself (the lock's last line, `.`) is uninstalled
and installed again by `pip install -r requirements.txt` on every run, so the venv always
holds the checkout's code as a wheel would.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

PROJECT = "webhook-inbox"
CACHE = REPO / ".cache" / "prod-venv"
INSTALL_TIMEOUT_SECONDS = 900
# Variables of the developer's shell that would make pip install something else.
PIP_SCRUBBED = ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV", "PIP_USER", "VIRTUAL_ENV",
                "PIP_CONSTRAINT", "PIP_EDITABLE")


def lock_pins(path: Path = REPO / "requirements.txt") -> dict[str, str]:
    """{normalised name: version} of every `name==version` line of a lock file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split(";", 1)[0].split("==", 1)
            pins[normalise(name.split("[", 1)[0])] = version.strip()
    return pins


def normalise(name: str) -> str:
    """PEP 503 name normalisation (`Flask` and `flask`, `zope.event` and `zope-event`)."""
    return "-".join(name.lower().replace("_", "-").replace(".", "-").split("-"))


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in PIP_SCRUBBED}
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *args], cwd=REPO,
                            env=env, capture_output=True, text=True,
                            timeout=INSTALL_TIMEOUT_SECONDS)
    assert result.returncode == 0, f"pip {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def production_venv() -> Path:
    """The venv a deploy builds from requirements.txt, with the checkout's code installed."""
    lock = (REPO / "requirements.txt").read_bytes()
    key = hashlib.sha256(lock + sys.version.encode()).hexdigest()[:16]
    venv = CACHE / key
    if CACHE.exists():  # venvs of older locks
        for old in CACHE.iterdir():
            if old.name != key:
                shutil.rmtree(old, ignore_errors=True)
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    else:
        _pip(venv, "uninstall", "--yes", "--quiet", PROJECT)
    # A platform builds from a clean checkout: no build/ left by an earlier in-tree build,
    # whose stale copies of deleted modules setuptools would put in the wheel.
    shutil.rmtree(REPO / "build", ignore_errors=True)
    _pip(venv, "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt")
    (venv / ".complete").touch()
    return venv


def installed(venv: Path) -> dict[str, str]:
    """{normalised name: version} of what the venv holds besides pip's own tools."""
    frozen = _pip(venv, "list", "--format=freeze", "--exclude", "pip", "--exclude",
                  "setuptools", "--exclude", "wheel").stdout
    return {normalise(line.split("==")[0]): line.split("==")[1]
            for line in frozen.splitlines() if "==" in line}


def pip_check(venv: Path) -> str:
    """`pip check`'s verdict on the venv ('No broken requirements found.' when clean)."""
    return _pip(venv, "check").stdout.strip()
