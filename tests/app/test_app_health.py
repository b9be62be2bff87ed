"""/health, /ready, /version and /metrics."""

from __future__ import annotations

import shutil
import subprocess

from app_helpers import chat_body
from techno_os_api import __version__


async def test_health_returns_exactly_status_ok(make_app):
    async with make_app() as client:
        response = await client.http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_database_ok(make_app):
    async with make_app() as client:
        response = await client.http.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_ready_is_503_with_reason_when_database_unreachable(make_app, postgres):
    # A port where nothing listens: the app starts anyway, /health answers, /ready says why not.
    async with make_app(db_port=1) as client:
        health = await client.http.get("/health")
        ready = await client.http.get("/ready")
    assert health.status_code == 200
    assert ready.status_code == 503
    body = ready.json()
    assert body["database"] == "unreachable"
    # The reason is generic: the driver's text (hosts, ports, users) stays in the log.
    assert body["reason"] == "the database did not answer (details in the API log)"
    assert "127.0.0.1" not in ready.text and "Errno" not in ready.text


async def test_version_is_the_package_version(make_app):
    async with make_app() as client:
        response = await client.http.get("/version")
    assert response.status_code == 200
    assert response.json() == {"name": "techno-os-api", "version": __version__}


async def test_build_info_metric_carries_the_version(make_app):
    async with make_app() as client:
        assert await client.metric("techno_os_build_info", version=__version__) == 1.0


async def test_metric_series_exist_from_start_for_allowed_providers(make_app):
    async with make_app(veritta_llm_allowed_providers="fake,openai") as client:
        samples = await client.metrics()
    for provider in ("fake", "openai"):
        key = frozenset({"provider": provider}.items())
        assert samples[("llm_request_latency_seconds_count", key)] == 0
        assert samples[("llm_circuit_state", key)] == 0
        for token_type in ("prompt", "completion"):
            labels = frozenset({"provider": provider, "type": token_type}.items())
            assert samples[("llm_tokens_total", labels)] == 0
        for error_type in ("timeout", "provider_error", "circuit_open"):
            labels = frozenset({"provider": provider, "error_type": error_type}.items())
            assert samples[("llm_errors_total", labels)] == 0
    # Providers outside the allowlist get no series.
    assert not any(dict(labels).get("provider") == "anthropic" for _, labels in samples)


async def test_latency_histogram_has_runbook_buckets(make_app):
    async with make_app(veritta_llm_allowed_providers="fake") as client:
        samples = await client.metrics()
    buckets = {
        dict(labels)["le"]
        for name, labels in samples
        if name == "llm_request_latency_seconds_bucket"
    }
    assert {"2.0", "10.0", "20.0", "30.0", "+Inf"} <= buckets
    assert {"0.1", "0.5", "1.0"} <= buckets


async def test_metrics_pass_promtool_check(make_app, standin):
    # No skip: `make host-deps` installs promtool (Debian's prometheus).
    assert shutil.which("promtool"), "promtool is missing: apt-get install prometheus"
    standin.behave(status=500)
    async with make_app(
        veritta_llm_allowed_providers="fake,openai,google", openai_api_key="k"
    ) as client:
        await client.http.post("/v1/chat/completions", json=chat_body())
        await client.http.post("/v1/chat/completions", json=chat_body("openai/gpt-4o-mini"))
        await client.http.post("/v1/chat/completions", json=chat_body("google/gemini"))
        response = await client.http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=response.text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


async def test_head_health_has_headers_and_no_body(make_app):
    async with make_app() as client:
        response = await client.http.head("/health")
    assert response.status_code == 200
    assert response.headers["content-length"] == "15"
    assert response.content == b""


async def test_docs_and_schema_are_off_by_default(make_app):
    async with make_app() as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.http.get(path)).status_code == 404, path


async def test_health_is_documented_in_openapi(make_app):
    async with make_app(api_docs_enabled=True) as client:
        schema = (await client.http.get("/openapi.json")).json()
    assert {"/health", "/ready", "/version", "/metrics", "/v1/chat/completions"} <= set(
        schema["paths"]
    )
    assert schema["info"]["version"] == __version__


async def test_health_says_draining_with_503_while_the_drain_file_exists(make_app, tmp_path):
    drain = tmp_path / "draining"
    async with make_app(api_drain_file=str(drain)) as client:
        assert (await client.http.get("/health")).status_code == 200
        drain.touch()
        draining = await client.http.get("/health")
        assert draining.status_code == 503
        assert draining.json() == {"status": "draining"}
        # Only liveness says so: the release still serves its calls while it drains.
        assert (await client.http.get("/version")).status_code == 200
        drain.unlink()
        assert (await client.http.get("/health")).json() == {"status": "ok"}
