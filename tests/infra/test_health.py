"""Runbook § VERIFICAÇÃO DE HEALTH: Backend API and PostgreSQL.

Each `check_*` function is one runbook expectation; the tests call them, and test_breakage.py
shows that each fails when its thing is broken.
"""

from __future__ import annotations

import json

import pytest

from ._support import Target, lines_matching, wait_until

pytestmark = pytest.mark.readonly

# What counts as an error line in a container's log: Python tracebacks and logging levels,
# uvicorn's "ERROR:", PostgreSQL's ERROR/FATAL/PANIC.
ERROR_LINE = [
    r"\bERROR\b",
    r"\bCRITICAL\b",
    r"\bFATAL\b",
    r"\bPANIC\b",
    r"Traceback \(most recent call last\)",
]


def check_health_endpoint(t: Target) -> None:
    # The runbook's command, typed on the host: curl -s http://localhost:8000/health
    out = t.run("curl -s -m 5 %s", f"http://localhost:{t.cfg('api_port')}/health")
    assert out.rc == 0, f"curl http://localhost:{t.cfg('api_port')}/health failed: rc {out.rc}"
    assert json.loads(out.stdout) == {"status": "ok"}, f"/health answered {out.stdout!r}"


def check_container_running_and_healthy(t: Target, name: str) -> None:
    assert name in t.check("docker ps --format '{{.Names}}'").split(), f"`docker ps` lacks {name}"
    info = t.inspect(name)
    assert info, f"container {name} does not exist"

    def settled() -> dict | None:
        now = t.inspect(name)
        assert now, f"container {name} disappeared"
        state = now["State"]
        return state if state.get("Health", {}).get("Status") != "starting" else None

    state = wait_until(settled, timeout=90, what=f"{name}: health check settles")
    assert state["Running"], f"{name} is not running: {state['Status']}"
    assert "Health" in state, f"{name} has no Docker health check"
    assert state["Health"]["Status"] == "healthy", (
        f"{name} is {state['Health']['Status']}: "
        f"{[h.get('Output', '')[-200:] for h in state['Health'].get('Log', [])[-2:]]}"
    )


def check_no_error_lines_since_start(t: Target, name: str) -> None:
    info = t.inspect(name)
    assert info, f"container {name} does not exist"
    started = info["State"]["StartedAt"]
    logs = t.check("docker logs --since %s %s 2>&1", started, name)
    errors = lines_matching(logs, ERROR_LINE)
    assert not errors, f"{name} logged {len(errors)} error line(s) since {started}: {errors[:5]}"


def check_pg_isready(t: Target) -> None:
    out = t.run(
        "docker exec %s pg_isready -U %s -d %s",
        t.cfg("db_container"),
        t.cfg("db_user"),
        t.cfg("db_name"),
    )
    assert out.rc == 0, f"pg_isready exited {out.rc}: {(out.stdout + out.stderr).strip()}"
    assert "accepting connections" in out.stdout, out.stdout


@pytest.mark.role("api")
def test_health_endpoint_returns_exactly_status_ok(target: Target) -> None:
    check_health_endpoint(target)


@pytest.mark.role("api")
def test_ready_endpoint_reports_the_database_ok(target: Target) -> None:
    response = target.api("GET", "/ready", key=None)
    assert response.status == 200, f"/ready answered {response.status}: {response.body}"
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.role("api")
def test_api_container_is_running_and_healthy_per_docker(target: Target) -> None:
    check_container_running_and_healthy(target, target.cfg("api_container"))


@pytest.mark.role("db")
def test_db_container_is_running_and_healthy_per_docker(target: Target) -> None:
    check_container_running_and_healthy(target, target.cfg("db_container"))


@pytest.mark.role("api")
def test_api_logs_have_no_error_lines_since_start(target: Target) -> None:
    check_no_error_lines_since_start(target, target.cfg("api_container"))


@pytest.mark.role("db")
def test_db_logs_have_no_error_lines_since_start(target: Target) -> None:
    check_no_error_lines_since_start(target, target.cfg("db_container"))


@pytest.mark.role("db")
def test_pg_isready_says_accepting_connections(target: Target) -> None:
    check_pg_isready(target)


@pytest.mark.role("api")
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/chat/completions"), ("GET", "/preferences/x"), ("GET", "/llm/providers")],
)
def test_anonymous_api_calls_are_refused_on_loopback(
    target: Target, method: str, path: str
) -> None:
    """The front on the API host (what the runbook curls) asks for a client key too: nothing
    behind the edge's proxy trusts the network."""
    body = {"model": "fake/echo", "messages": [{"role": "user", "content": "x"}]}
    response = target.api(method, path, body if method == "POST" else None, key=None)
    assert response.status == 401, f"anonymous {method} {path} on loopback: {response.status}"
    assert response.json()["error"]["type"] == "invalid_api_key"
