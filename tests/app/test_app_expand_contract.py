"""Expand/contract: the release being replaced keeps working on the schema of the one replacing
it. During a release the new container migrates the database while the previous one still
serves (and after `make rollback`, the previous one serves the new schema for good), so every
migration since the previous release must only expand: new tables, new nullable columns, new
functions; a removal waits for the release after.

The previous release's code comes from git (app/releases.json names its commit), run as it ran:
its own `techno_os_api` package on top of this environment's libraries, against a PostgreSQL
migrated to today's head."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from app_helpers import run_migrate, subprocess_env
from pgserver import PostgresServer, free_port
from techno_os_api import __version__

REPO = Path(__file__).resolve().parents[2]
RELEASES = REPO / "app" / "releases.json"


def previous_release() -> dict[str, str]:
    released = json.loads(RELEASES.read_text())["released"]
    older = [r for r in released if r["version"] != __version__]
    assert older, f"{RELEASES} names no release older than {__version__}"
    return older[-1]


def previous_source(commit: str, into: Path) -> Path:
    """The previous release's app/src, from git; a clone without that commit cannot prove the
    property, so it fails (fetch the history: `git fetch --unshallow`)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "app/src"],
        cwd=REPO, capture_output=True, check=False,
    )  # fmt: skip
    assert archive.returncode == 0, (
        f"the previous release's commit {commit} is not in this clone "
        f"({archive.stderr.decode().strip()}): run `git fetch --unshallow`"
    )
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "app" / "src"


@pytest.fixture
def fresh_database() -> PostgresServer:
    server = PostgresServer()
    server.init()
    yield server
    server.destroy()


def test_the_previous_release_serves_on_todays_schema(
    fresh_database: PostgresServer, tmp_path: Path
) -> None:
    release = previous_release()
    source = previous_source(release["commit"], tmp_path)
    migrated = run_migrate(**fresh_database.env)
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    env = subprocess_env(
        **fresh_database.env,
        PYTHONPATH=str(source),
        VERITTA_LLM_ALLOWED_PROVIDERS="fake",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "techno_os_api.main:app", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                version = httpx.get(f"{base}/version", timeout=1).json()
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "the previous release did not start"
                time.sleep(0.2)
        # It is the previous release, not this tree's code.
        assert version["version"] == release["version"]
        assert httpx.get(f"{base}/ready").json()["database"] == "ok"
        written = httpx.put(f"{base}/preferences/alice", json={"theme": "dark", "n": 1})
        assert written.status_code == 200, written.text
        read = httpx.get(f"{base}/preferences/alice")
        assert read.status_code == 200 and read.json()["preferences"] == {"theme": "dark", "n": 1}
        chat = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "fake/echo", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 200, chat.text
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert "Traceback" not in output, output[-3000:]
