"""A key's limits and budget: exact at the boundary, shared by every API instance through
PostgreSQL, never exceeded under concurrency, and kept through a database outage."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import asyncpg
import openai
import pytest
from app_helpers import bearer, chat_body, create_key
from techno_os_api.auth.keys import BudgetPeriod, Role
from techno_os_api.core.config import Settings
from techno_os_api.db.api_keys import KeyRepository
from techno_os_api.db.engine import create_engine

URL = "/v1/chat/completions"
OPENAI = {"veritta_llm_allowed_providers": "fake,openai", "openai_api_key": "sk-upstream"}
FAKE = {"veritta_llm_allowed_providers": "fake"}
# The stand-in reports 7 prompt and 11 completion tokens per call.
STANDIN_TOKENS = 18


async def fresh_minute() -> None:
    """Rate windows are clock minutes (PostgreSQL's clock, this machine's): a test that counts
    requests within one starts early enough in a minute to finish inside it."""
    if time.time() % 60 > 45:
        await asyncio.sleep(60 - time.time() % 60 + 0.2)


async def usage_rows(database, key_id: str) -> list[dict]:
    conn = await asyncpg.connect(**database.connect_kwargs)
    try:
        rows = await conn.fetch("SELECT * FROM api_key_usage WHERE key_id = $1", key_id)
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def prices(tmp_path, usd_per_million: float) -> str:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps({"openai": {"default": {"prompt": usd_per_million, "completion": 0}}})
    )
    return str(path)


# --- requests per minute ------------------------------------------------------------------------
async def test_the_rpm_plus_first_request_in_the_minute_is_refused(make_app, standin):
    async with make_app(**OPENAI) as client:
        key = bearer(await client.new_key(rpm=5))
        await fresh_minute()
        statuses = [
            (await client.http.post(URL, json=chat_body("openai/gpt"), headers=key)).status_code
            for _ in range(6)
        ]
        assert statuses == [200] * 5 + [429]
        refused = await client.http.post(URL, json=chat_body("openai/gpt"), headers=key)
        assert refused.json()["error"]["type"] == "rate_limit_exceeded"
        assert refused.json()["error"]["limit"] == "rpm"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert await client.metric("api_requests_refused_total", reason="rpm") == 2
    assert standin.count == 5  # a refused call never reaches the provider


async def test_rpm_is_shared_by_every_api_instance(make_app):
    async with make_app(**FAKE) as first, make_app(**FAKE) as second:
        secret = await first.new_key(rpm=4)
        await fresh_minute()
        statuses = []
        for client in (first, second, first, second, first, second):
            response = await client.http.post(URL, json=chat_body(), headers=bearer(secret))
            statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_the_sdk_raises_rate_limit_error_on_429(served, database):
    async def make() -> str:
        engine = create_engine(Settings(**database.settings), pooled=False)
        try:
            return (await create_key(KeyRepository(engine), role=Role.USER, rpm=1))[1]
        finally:
            await engine.dispose()

    secret = asyncio.run(make())
    if time.time() % 60 > 50:
        time.sleep(60 - time.time() % 60 + 0.2)
    client = openai.OpenAI(base_url=served.url, api_key=secret, max_retries=0)
    client.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": "a"}])
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="fake/echo", messages=[{"role": "user", "content": "b"}]
        )
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"]


# --- tokens per minute and concurrency -----------------------------------------------------------
async def test_tpm_counts_the_reservation_of_calls_in_flight(make_app, standin):
    standin.behave(delay=1.0)
    async with make_app(**OPENAI) as client:
        key = bearer(await client.new_key(tpm=1000))
        await fresh_minute()
        body = chat_body("openai/gpt", max_tokens=600)  # reserves ~600 + the prompt estimate
        first, second = await asyncio.gather(
            client.http.post(URL, json=body, headers=key),
            client.http.post(URL, json=body, headers=key),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 429]
        refused = first if first.status_code == 429 else second
        assert refused.json()["error"]["limit"] == "tpm"
        # A call that could never fit says so instead of asking to retry.
        huge = await client.http.post(
            URL, json=chat_body("openai/gpt", max_tokens=5000), headers=key
        )
        assert huge.status_code == 429
        assert huge.headers["x-should-retry"] == "false"
        assert "more than the key's 1000 tokens per minute" in huge.json()["error"]["message"]
    assert standin.count == 1


async def test_max_parallel_refuses_the_call_over_the_limit(make_app, standin):
    standin.behave(delay=1.0)
    async with make_app(**OPENAI) as client:
        key = bearer(await client.new_key(max_parallel=2))
        responses = await asyncio.gather(
            *(client.http.post(URL, json=chat_body("openai/gpt"), headers=key) for _ in range(3))
        )
        assert sorted(r.status_code for r in responses) == [200, 200, 429]
        assert await client.metric("api_requests_refused_total", reason="parallel") == 1
        # The slots are free again once the calls end.
        assert (
            await client.http.post(URL, json=chat_body("openai/gpt"), headers=key)
        ).status_code == 200


async def test_keys_without_their_own_limit_get_the_default_concurrency(make_app, standin):
    standin.behave(delay=1.0)
    async with make_app(**OPENAI, key_default_max_parallel=1) as client:
        key = bearer(await client.new_key())
        responses = await asyncio.gather(
            client.http.post(URL, json=chat_body("openai/gpt"), headers=key),
            client.http.post(URL, json=chat_body("openai/gpt"), headers=key),
        )
    assert sorted(r.status_code for r in responses) == [200, 429]


# --- budgets ------------------------------------------------------------------------------------
async def budget_key(client, budget: str, **fields):
    return await create_key(
        client.services.keys, role=Role.USER, budget_usd=Decimal(budget), **fields
    )


async def test_twenty_concurrent_calls_on_two_instances_never_exceed_the_budget(
    make_app, standin, database, tmp_path
):
    # $1000 per million prompt tokens, completion free: each call reserves its prompt estimate
    # (about 60 tokens, $0.06) and really costs the stand-in's 7 prompt tokens ($0.007).
    standin.behave(delay=0.5)
    settings = {**OPENAI, "llm_prices_file": prices(tmp_path, 1000)}
    async with make_app(**settings) as first, make_app(**settings) as second:
        # Parallelism above the 20 calls: the budget alone decides (with the default of 8 per
        # key, which of the two refusals a caller sees first depends on the machine's timing).
        key, secret = await budget_key(first, "0.25", max_parallel=20)
        body = chat_body("openai/gpt", max_tokens=1)
        responses = await asyncio.gather(
            *(
                client.http.post(URL, json=body, headers=bearer(secret))
                for client in [first, second] * 10
            )
        )
        statuses = [r.status_code for r in responses]
        admitted = statuses.count(200)
        assert statuses.count(429) == 20 - admitted
        assert 1 <= admitted <= 4  # 0.25 / 0.06: the reservations of calls in flight count
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["error"]["limit"] == "budget"
        for client in (first, second):
            await client.services.admitter.flush()
        rows = await usage_rows(database, key.id)
    spent = sum(row["spent_usd"] for row in rows)
    assert spent == Decimal("0.007") * admitted <= Decimal("0.25")
    assert sum(row["requests"] for row in rows) == admitted
    assert standin.count == admitted


async def test_a_spent_budget_refuses_with_insufficient_quota(make_app, standin, tmp_path):
    settings = {**OPENAI, "llm_prices_file": prices(tmp_path, 1000)}
    async with make_app(**settings) as client:
        key, secret = await budget_key(client, "0.1", budget_period=BudgetPeriod.DAY)
        body = chat_body("openai/gpt", max_tokens=1)
        statuses = []
        for _ in range(12):
            response = await client.http.post(URL, json=body, headers=bearer(secret))
            statuses.append(response.status_code)
        # Admitted while spent + this call's reservation (~$0.06) fits in $0.1; each call
        # really costs $0.007, settled before the next one is admitted.
        admitted = statuses.count(200)
        assert statuses == [200] * admitted + [429] * (12 - admitted)
        assert 4 <= admitted <= 7
        last = await client.http.post(URL, json=body, headers=bearer(secret))
        assert last.json()["error"]["type"] == "insufficient_quota"
        assert last.headers["x-should-retry"] == "false"
        usage = await client.services.keys.usage(key)
        assert usage.spent_usd == Decimal("0.007") * admitted
        assert usage.requests == admitted
        assert usage.reserved_usd == 0
        assert await client.metric("llm_cost_usd_total", provider="openai", model="other") == (
            pytest.approx(0.007 * admitted)
        )
    assert standin.count == admitted


async def test_spend_and_usage_survive_a_restart(make_app, database):
    async with make_app(**FAKE) as client:
        key, secret = await create_key(client.services.keys, role=Role.USER)
        for _ in range(3):
            await client.http.post(URL, json=chat_body(content="a b c"), headers=bearer(secret))
    # The app's shutdown wrote what it had; a new instance reads it from PostgreSQL.
    async with make_app(**FAKE) as again:
        usage = await again.services.keys.usage(key)
        got = await again.services.keys.get(key.id)
    assert usage.requests == 3
    assert usage.prompt_tokens == 9 and usage.completion_tokens == 12
    assert usage.spent_usd == Decimal("0.000033")  # fake: $1/M prompt, $2/M completion
    assert got is not None and got.last_used_at is not None


async def test_spend_during_a_database_outage_is_written_when_it_is_back(
    make_app, postgres, database, clock
):
    async with make_app(**FAKE, auth_cache_ttl_seconds=30) as client:
        key, secret = await budget_key(client, "10")
        # Seen once with the database up: the key is cached, its headroom known.
        assert (await client.http.post(URL, json=chat_body(), headers=bearer(secret))).is_success
        await client.services.admitter.flush()
        postgres.stop()
        try:
            for _ in range(4):
                response = await client.http.post(URL, json=chat_body(), headers=bearer(secret))
                assert response.status_code == 200
            with pytest.raises(Exception):  # noqa: B017 (any failure to write: kept)
                await client.services.admitter.flush()
            assert client.services.admitter.pending > 0
        finally:
            postgres.start()
        await client.services.admitter.flush()
        assert client.services.admitter.pending == 0
        usage = await client.services.keys.usage(key)
    assert usage.requests == 5  # nothing lost
    assert usage.reserved_usd == 0


async def test_an_uncached_budget_during_an_outage_is_refused_not_guessed(make_app, postgres):
    async with make_app(**FAKE, auth_cache_ttl_seconds=30) as client:
        _, secret = await budget_key(client, "10")
        # Authenticated (cached) but never admitted: this instance does not know the headroom.
        await client.services.authenticator.authenticate(f"Bearer {secret}", "127.0.0.1")
        postgres.stop()
        try:
            response = await client.http.post(URL, json=chat_body(), headers=bearer(secret))
        finally:
            postgres.start()
    assert response.status_code == 429
    assert (
        "cannot be checked while the database is unavailable"
        in (response.json()["error"]["message"])
    )


async def test_a_dead_instances_reservation_is_charged_in_full_after_its_hold(make_app, database):
    async with make_app(**FAKE) as client:
        key, secret = await budget_key(client, "1")
        conn = await asyncpg.connect(**database.connect_kwargs)
        try:
            await conn.execute(
                "INSERT INTO api_key_reservations (id, key_id, period_start, window_start, "
                "amount_usd, tokens, expires_at) VALUES (gen_random_uuid(), $1, "
                "techno_os_period_start('month', now()), now(), 0.25, 100, "
                "now() - interval '1 second')",
                key.id,
            )
        finally:
            await conn.close()
        assert (await client.http.post(URL, json=chat_body(), headers=bearer(secret))).is_success
        usage = await client.services.keys.usage(key)
    assert usage.reserved_usd == 0
    assert usage.spent_usd >= Decimal("0.25")


# --- streams --------------------------------------------------------------------------------------
async def test_a_stream_settles_once_with_the_usage_it_streamed(
    make_app, standin, database, tmp_path
):
    # $1000 per million prompt tokens: the stream's 7 prompt tokens cost $0.007, whether or not
    # the client asked for the usage chunk.
    settings = {**OPENAI, "llm_prices_file": prices(tmp_path, 1000)}
    async with make_app(**settings) as client:
        key, secret = await budget_key(client, "1")
        body = chat_body("openai/gpt", max_tokens=5, stream=True)
        response = await client.http.post(URL, json=body, headers=bearer(secret))
        assert response.text.endswith("data: [DONE]\n\n")
        await client.services.admitter.flush()
        rows = await usage_rows(database, key.id)
    assert [(r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        (1, 7, 11)
    ]
    assert sum(r["spent_usd"] for r in rows) == Decimal("0.007")


async def test_a_stream_cut_short_is_charged_its_reservation(make_app, standin, database, tmp_path):
    # Cut after the first chunks, before any usage: what it cost is unknown, so the call keeps
    # its reservation's cost (its prompt estimate, far above the 7 tokens it would have cost).
    standin.behave(text=("a ", "b ", "c"), fail_after=2, fail_mode="drop")
    settings = {**OPENAI, "llm_prices_file": prices(tmp_path, 1000)}
    async with make_app(**settings) as client:
        key, secret = await budget_key(client, "1")
        body = chat_body("openai/gpt", max_tokens=5, stream=True)
        response = await client.http.post(URL, json=body, headers=bearer(secret))
        assert '"stream_interrupted"' in response.text
        await client.services.admitter.flush()
        rows = await usage_rows(database, key.id)
    assert sum(r["requests"] for r in rows) == 1
    spent = sum(r["spent_usd"] for r in rows)
    assert Decimal("0.02") < spent < Decimal("1")
