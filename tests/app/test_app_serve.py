"""The container's command and health check, run as processes exactly as the image runs them."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
from app_helpers import subprocess_env
from pgserver import free_port
from techno_os_api.serve import uvicorn_argv


def test_one_uvicorn_worker_on_all_interfaces_by_default():
    from techno_os_api.core.config import Settings

    settings = Settings()
    argv = uvicorn_argv(
        settings.api_host,
        settings.api_port,
        settings.log_level,
        settings.api_access_log,
        settings.api_forwarded_allow_ips,
        settings.api_graceful_shutdown_seconds,
    )
    assert argv[1:4] == ["-m", "uvicorn", "techno_os_api.main:app"]
    # X-Forwarded-For is believed from the local proxy only, never from any peer.
    assert argv[argv.index("--forwarded-allow-ips") + 1] == "127.0.0.1"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--port") + 1] == "8000"
    assert argv[argv.index("--workers") + 1] == "1"
    # Requests in flight (streams) get a minute after SIGTERM, shorter than a release's wait.
    assert argv[argv.index("--timeout-graceful-shutdown") + 1] == "60"


def test_serve_migrates_then_serves(database):
    port = free_port()
    env = subprocess_env(**database.env, API_PORT=str(port), VERITTA_LLM_ALLOWED_PROVIDERS="fake")
    process = subprocess.Popen(
        [sys.executable, "-m", "techno_os_api.serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        assert response.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/ready").json()["database"] == "ok"
        health = subprocess.run(
            [sys.executable, "-m", "techno_os_api.healthcheck"],
            env=subprocess_env(API_PORT=str(port)),
            check=False,
        )
        assert health.returncode == 0
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert "migrations applied" in output
    # A graceful stop: uvicorn finishes the lifespan, then re-raises SIGTERM (exit -15).
    assert "Application shutdown complete" in output
    assert process.returncode in (0, -15)


def test_healthcheck_fails_when_nothing_answers():
    result = subprocess.run(
        [sys.executable, "-m", "techno_os_api.healthcheck"],
        env=subprocess_env(API_PORT=str(free_port())),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "unhealthy" in result.stderr
