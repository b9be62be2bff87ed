"""Helpers for the script tests: the docker CLI, the scripts under test, a PostgreSQL container.

Everything runs against the local Docker engine with throwaway names (prefix ``tost-``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASE_SCRIPT = REPO / "files/images/base/build_base_image.sh"
POSTGRES_CONTEXT = REPO / "files/images/postgres"
BACKUP_SCRIPT = REPO / "files/scripts/backup_observability.sh"
RESTORE_SCRIPT = REPO / "files/scripts/restore_observability.sh"
SHELL_SCRIPTS = [
    BASE_SCRIPT,
    POSTGRES_CONTEXT / "docker-entrypoint.sh",
    BACKUP_SCRIPT,
    RESTORE_SCRIPT,
]

BASE_IMAGE = os.environ.get("TOST_BASE_IMAGE", "techno-os/debian:bookworm")
POSTGRES_IMAGE = "tost/postgres:15-test"
DB_USER = "techno_user"
DB_NAME = "techno_os"
DB_PASSWORD = "tost-Secret'pw\"42"


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output as text, fail with the output when check fails."""
    proc = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        input=input,
        cwd=cwd,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def docker(*args: str, check: bool = True, timeout: float = 120) -> str:
    return run(["docker", *args], check=check, timeout=timeout).stdout.strip()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.5) -> None:
    """The one polling helper: call predicate until it is true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def script_env(**overrides: str) -> dict[str, str]:
    """A clean environment for the scripts: PATH and HOME only, plus the overrides."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
    }
    env.update(overrides)
    return env


def run_backup(**env: str) -> subprocess.CompletedProcess[str]:
    return run(["bash", BACKUP_SCRIPT], check=False, timeout=300, env=script_env(**env))


@dataclass
class Db:
    """A techno-os/postgres container on a named volume."""

    container: str
    volume: str

    def start(self, *, password: bool = True) -> None:
        args = [
            "run",
            "-d",
            "--name",
            self.container,
            "-v",
            f"{self.volume}:/var/lib/postgresql/data",
        ]
        if password:
            args += ["-e", f"DB_USER={DB_USER}", "-e", f"DB_PASSWORD={DB_PASSWORD}"]
            args += ["-e", f"DB_NAME={DB_NAME}"]
        docker(*args, POSTGRES_IMAGE)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            running = docker("inspect", "-f", "{{.State.Running}}", self.container, check=False)
            if running != "true":
                logs = run(["docker", "logs", self.container], check=False)
                raise AssertionError(f"{self.container} stopped:\n{logs.stdout}{logs.stderr}")
            probe = ["exec", self.container, "pg_isready", "-q", "-U", DB_USER, "-d", DB_NAME]
            # pg_isready also answers during crash recovery: insist on a real query too.
            return (
                run(["docker", *probe], check=False).returncode == 0
                and run(
                    ["docker", "exec", self.container, *self._psql("SELECT 1")], check=False
                ).returncode
                == 0
            )

        wait_until(ready, timeout, f"{self.container} to accept connections")

    @staticmethod
    def _psql(sql: str) -> list[str]:
        return [
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-U",
            DB_USER,
            "-d",
            DB_NAME,
            "-c",
            sql,
        ]

    def sql(self, sql: str, timeout: float = 120) -> str:
        return docker("exec", self.container, *self._psql(sql), timeout=timeout)

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.container, check=False)
