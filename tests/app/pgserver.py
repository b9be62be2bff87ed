"""A throwaway PostgreSQL 15 from Debian's binaries, on a free loopback port.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
`postgres` system user (created by Debian's package) or, failing that, `nobody`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "techno_user"
PASSWORD = "test-password-not-secret"
DATABASE = "techno_os"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _os_user() -> str | None:
    """The unprivileged user to run PostgreSQL as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and neither user 'postgres' nor 'nobody' exists")


@dataclass
class PostgresServer:
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="techno-pg-")))
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(
                f"PostgreSQL 15 binaries not found in {PG_BIN}: "
                "apt-get install postgresql-15 (or set PG_BIN)"
            )
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.log = self.root / "postgres.log"
        self.os_user = _os_user()

    @property
    def env(self) -> dict[str, str]:
        """The app's database settings for this server."""
        return {
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(self.port),
            "DB_USER": USER,
            "DB_PASSWORD": PASSWORD,
            "DB_NAME": DATABASE,
        }

    @property
    def connect_kwargs(self) -> dict[str, object]:
        """For `asyncpg.connect`, to look at tables directly."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": USER,
            "password": PASSWORD,
            "database": DATABASE,
        }

    @property
    def settings(self) -> dict[str, str]:
        """The same, as keyword arguments for `Settings`."""
        return {name.lower(): value for name, value in self.env.items()}

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self.os_user:
            command = ["runuser", "-u", self.os_user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{log}"
            )
        return result

    def init(self) -> None:
        self.sockets.mkdir(parents=True)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.os_user:
            shutil.chown(self.root, self.os_user)
            for path in (self.sockets, pwfile):
                shutil.chown(path, self.os_user)
        self._run(
            str(PG_BIN / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            USER,
            "--pwfile",
            str(pwfile),
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        self.start()
        self._run(
            str(PG_BIN / "createdb"),
            "--host",
            str(self.sockets),
            "--port",
            str(self.port),
            "--username",
            USER,
            DATABASE,
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.sockets} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log),
            "--options",
            options,
            "--wait",
            "--timeout",
            "30",
            "start",
        )
        self.wait_accepting()

    def wait_accepting(self, deadline_seconds: float = 15) -> None:
        deadline = time.monotonic() + deadline_seconds
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self._run(
            str(PG_BIN / "pg_ctl"),
            "--pgdata",
            str(self.data),
            "--mode",
            "fast",
            "--wait",
            "stop",
        )

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
