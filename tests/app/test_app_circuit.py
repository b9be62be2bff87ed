"""The per-provider circuit breaker through the API, against a real HTTP stand-in, with the
breaker clock driven by the test. Metric values are read back from /metrics after each step."""

from __future__ import annotations

import asyncio

from app_helpers import AppClient, chat_body
from standin import Behaviour

OPENAI = {"veritta_llm_allowed_providers": "fake,openai", "openai_api_key": "sk-test"}
URL = "/v1/chat/completions"


async def call(client: AppClient, model: str = "openai/gpt-4o-mini"):
    return await client.http.post(URL, json=chat_body(model))


async def errors(client: AppClient, error_type: str, provider: str = "openai") -> float | None:
    return await client.metric("llm_errors_total", provider=provider, error_type=error_type)


async def state(client: AppClient, provider: str = "openai") -> float | None:
    return await client.metric("llm_circuit_state", provider=provider)


async def provider_status(client: AppClient, name: str = "openai") -> dict:
    body = (await client.http.get("/llm/providers")).json()
    return next(p for p in body["providers"] if p["name"] == name)


async def test_whole_state_machine(make_app, standin, clock):
    standin.behave(status=500)
    async with make_app(**OPENAI) as client:
        # CLOSED: three consecutive 5xx, each a 502 provider_error, the third opens the circuit.
        for attempt in range(1, 4):
            response = await call(client)
            assert response.status_code == 502
            assert response.json()["error"]["type"] == "provider_error"
            assert "HTTP 500" in response.json()["error"]["message"]
            assert await errors(client, "provider_error") == attempt
        assert standin.count == 3
        assert await state(client) == 1  # OPEN
        status = await provider_status(client)
        assert status["circuit_state"] == "OPEN"
        assert status["consecutive_failures"] == 3
        assert status["seconds_until_half_open"] == 60

        # OPEN: refused at once, nothing sent, Retry-After says how long.
        response = await call(client)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "60"
        assert response.json()["error"]["type"] == "circuit_open"
        assert standin.count == 3
        assert await errors(client, "circuit_open") == 1
        clock.advance(45)
        response = await call(client)
        assert response.headers["Retry-After"] == "15"
        assert await errors(client, "circuit_open") == 2

        # Cooldown over: HALF_OPEN, visible in the gauge before any call.
        clock.advance(15)
        assert await state(client) == 2
        assert (await provider_status(client))["circuit_state"] == "HALF_OPEN"

        # One trial while four concurrent callers are refused; the trial fails -> OPEN again.
        standin.behave(status=500, delay=0.3)
        responses = await asyncio.gather(*(call(client) for _ in range(5)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [502, 503, 503, 503, 503]
        assert standin.count == 4  # exactly one trial reached the provider
        assert await state(client) == 1
        assert (await provider_status(client))["seconds_until_half_open"] == 60  # full cooldown
        assert await errors(client, "circuit_open") == 6
        assert await errors(client, "provider_error") == 4

        # Next cooldown: the single trial succeeds and closes the circuit.
        clock.advance(60)
        standin.behave(status=200, delay=0.3)
        responses = await asyncio.gather(*(call(client) for _ in range(5)))
        assert sorted(r.status_code for r in responses) == [200, 503, 503, 503, 503]
        assert standin.count == 5
        assert await state(client) == 0
        status = await provider_status(client)
        assert status["circuit_state"] == "CLOSED"
        assert status["consecutive_failures"] == 0

        # CLOSED again: calls flow.
        standin.behave(status=200)
        assert (await call(client)).status_code == 200
        assert standin.count == 6
        assert await client.metric("llm_request_latency_seconds_count", provider="openai") == 6


async def test_circuits_are_per_provider(make_app, standin):
    standin.behave(status=503)
    async with make_app(**OPENAI) as client:
        for _ in range(3):
            await call(client)
        assert await state(client) == 1
        assert await state(client, "fake") == 0
        assert (await call(client, "fake/echo")).status_code == 200


async def test_a_success_resets_the_failure_count(make_app, standin):
    async with make_app(**OPENAI) as client:
        standin.behave(status=500)
        await call(client)
        await call(client)
        standin.behave(status=200)
        assert (await call(client)).status_code == 200
        standin.behave(status=500)
        await call(client)
        await call(client)
        assert await state(client) == 0
        assert (await provider_status(client))["consecutive_failures"] == 2


async def test_rate_limit_429_trips_the_breaker(make_app, standin):
    standin.behave(status=429)
    async with make_app(**OPENAI) as client:
        for _ in range(3):
            response = await call(client)
            assert response.status_code == 429
            assert response.json()["error"]["type"] == "provider_rate_limited"
        assert await state(client) == 1
        assert await errors(client, "rate_limited") == 3


async def test_other_4xx_are_surfaced_and_do_not_trip(make_app, standin):
    standin.behave(status=400)
    async with make_app(**OPENAI) as client:
        for _ in range(5):
            response = await call(client)
            assert response.status_code == 400
            error = response.json()["error"]
            assert error["type"] == "client_error"
            assert error["upstream_status"] == 400
            assert error["message"] == "openai rejected the request: stand-in failure 400"
            assert response.headers["x-should-retry"] == "false"
        # A bad provider key is the operator's problem: 502, never retried, breaker untouched.
        standin.behave(status=401)
        response = await call(client)
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["type"] == "provider_auth_error"
        assert error["upstream_status"] == 401
        assert "check OPENAI_API_KEY" in error["message"]
        assert response.headers["x-should-retry"] == "false"
        assert standin.count == 6
        assert await state(client) == 0
        assert await errors(client, "client_error") == 5
        assert await errors(client, "provider_auth_error") == 1
        assert await errors(client, "provider_error") == 0


async def test_client_error_does_not_break_a_failure_streak(make_app, standin):
    async with make_app(**OPENAI) as client:
        standin.script(Behaviour(status=500), Behaviour(status=500), Behaviour(status=400))
        for _ in range(3):
            await call(client)
        assert (await provider_status(client))["consecutive_failures"] == 2
        standin.behave(status=500)
        await call(client)
        assert await state(client) == 1


async def test_timeout_is_504_and_trips_the_breaker(make_app, standin):
    standin.behave(status=200, delay=5)
    async with make_app(**OPENAI, llm_timeout_seconds=0.2) as client:
        for attempt in range(1, 4):
            response = await call(client)
            assert response.status_code == 504
            assert response.json()["error"]["type"] == "timeout"
            assert "within 0.2s" in response.json()["error"]["message"]
            assert await errors(client, "timeout") == attempt
        assert await state(client) == 1
        assert (await call(client)).status_code == 503
        assert standin.count == 3
        samples = await client.metrics()
        count = samples[("llm_request_latency_seconds_count", frozenset({("provider", "openai")}))]
        total = samples[("llm_request_latency_seconds_sum", frozenset({("provider", "openai")}))]
        assert count == 3
        assert 0.6 <= total < 3


async def test_connection_error_is_a_provider_error(make_app, standin):
    from pgserver import free_port

    async with make_app(**OPENAI, openai_base_url=f"http://127.0.0.1:{free_port()}") as client:
        response = await call(client)
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "provider_error"
        assert await errors(client, "provider_error") == 1


async def test_threshold_and_cooldown_come_from_settings(make_app, standin, clock):
    standin.behave(status=500)
    async with make_app(
        **OPENAI, llm_circuit_failure_threshold=1, llm_circuit_cooldown_seconds=5
    ) as client:
        await call(client)
        response = await call(client)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        clock.advance(5)
        assert await state(client) == 2


async def test_restart_resets_every_breaker(make_app, standin):
    standin.behave(status=500)
    async with make_app(**OPENAI) as client:
        for _ in range(3):
            await call(client)
        assert await state(client) == 1
    async with make_app(**OPENAI) as restarted:  # a new process: fresh breakers
        assert await state(restarted) == 0
        standin.behave(status=200)
        assert (await call(restarted)).status_code == 200
