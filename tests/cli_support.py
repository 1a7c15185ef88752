"""Run the installed `inbox` console script in a subprocess, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

INBOX = str(Path(sys.executable).parent / "inbox")
# Settings the developer's shell may carry that would change what a command does.
SCRUBBED = ("DATABASE_URL", "STRIPE_WEBHOOK_SECRET", "INBOX_DEV_DIR", "PORT")


def cli_env(dev_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a command: nothing inherited that matters, a private dev dir."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env["INBOX_DEV_DIR"] = str(dev_dir)
    env.update(overrides)
    return env


def inbox(*args: str, env: dict[str, str], timeout: float = 60,
          cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INBOX, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
