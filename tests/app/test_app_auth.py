"""Client keys at the door: what needs a key, the 401/403 answers, the cache and its TTL, the
database outage, and the brute-force block. Real PostgreSQL, real HTTP stand-in."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest
from app_helpers import bearer, chat_body, subprocess_env
from pgserver import free_port
from techno_os_api.auth.keys import Role

URL = "/v1/chat/completions"
FAKE = {"veritta_llm_allowed_providers": "fake"}
WITH_OPENAI = {"veritta_llm_allowed_providers": "fake,openai", "openai_api_key": "sk-upstream"}


async def failures(client, reason: str) -> float | None:
    return await client.metric("api_auth_failures_total", reason=reason)


# --- what needs a key ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", URL, chat_body()),
        ("GET", "/preferences/alice", None),
        ("PUT", "/preferences/alice", {"theme": "x"}),
        ("GET", "/llm/providers", None),
    ],
)
async def test_anonymous_calls_get_401_in_openai_shape(make_app, standin, method, path, body):
    async with make_app(**WITH_OPENAI) as client:
        response = await client.http.request(method, path, json=body, headers={"Authorization": ""})
        assert response.status_code == 401
        assert response.json() == {
            "error": {
                "message": "missing API key: send `Authorization: Bearer <key>` (the SDK's "
                "api_key)",
                "type": "invalid_api_key",
                "param": None,
                "code": "invalid_api_key",
                "reason": "missing",
            }
        }
        assert await failures(client, "missing") == 1
    assert standin.count == 0


@pytest.mark.parametrize("path", ["/health", "/ready", "/version", "/metrics"])
async def test_probes_and_metrics_stay_open(make_app, path):
    async with make_app() as client:
        response = await client.http.get(path, headers={"Authorization": ""})
    assert response.status_code == 200


async def test_malformed_unknown_revoked_and_expired_keys(make_app):
    async with make_app(**FAKE) as client:
        unknown = "tos_" + "A" * 43
        revoked_key, revoked = await _key(client)
        await client.services.keys.revoke(revoked_key.id)
        _, expired = await _key(client, expires_at=datetime.now(UTC) - timedelta(seconds=1))
        answers = {}
        for name, header in {
            "malformed": "Bearer sk-not-ours",
            "not bearer": "Basic dXNlcjpwYXNz",
            "unknown": f"Bearer {unknown}",
            "revoked": f"Bearer {revoked}",
            "expired": f"Bearer {expired}",
        }.items():
            response = await client.http.post(
                URL, json=chat_body(), headers={"Authorization": header}
            )
            assert response.status_code == 401, name
            answers[name] = response.json()["error"]
        assert answers["malformed"]["message"].startswith("malformed API key")
        assert answers["not bearer"]["reason"] == "malformed"
        assert answers["expired"]["message"].startswith("expired API key")
        # An unknown key and a revoked one get exactly the same answer.
        assert answers["unknown"] == answers["revoked"]
        assert answers["unknown"]["message"] == "invalid API key"
        assert await failures(client, "malformed") == 2
        assert await failures(client, "invalid") == 2
        assert await failures(client, "expired") == 1


async def _key(client, **fields):
    from app_helpers import create_key

    fields.setdefault("role", Role.USER)
    return await create_key(client.services.keys, **fields)


async def test_providers_listing_needs_an_admin_key(make_app):
    async with make_app() as client:
        user = await client.new_key(user="alice")
        assert (await client.http.get("/llm/providers", headers=bearer(user))).status_code == 403
        assert (await client.http.get("/llm/providers")).status_code == 200  # admin
        assert await client.metric("api_requests_refused_total", reason="permission") == 1


async def test_a_user_key_reaches_only_its_own_preferences(make_app):
    async with make_app() as client:
        alice = bearer(await client.new_key(user="alice"))
        put = await client.http.put("/preferences/alice", json={"theme": "dark"}, headers=alice)
        assert put.status_code == 200
        assert (await client.http.get("/preferences/alice", headers=alice)).status_code == 200
        for method, body in (("GET", None), ("PUT", {"theme": "stolen"})):
            response = await client.http.request(
                method, "/preferences/bob", json=body, headers=alice
            )
            assert response.status_code == 403, method
            assert response.json()["error"]["type"] == "permission_denied"
        # The admin key (the client's default) reads and writes anyone's.
        assert (await client.http.put("/preferences/bob", json={"a": 1})).status_code == 200
        got = await client.http.get("/preferences/alice")
        assert got.json()["preferences"] == {"theme": "dark"}


async def test_a_key_limited_to_providers_is_refused_before_any_network(make_app, standin):
    async with make_app(**WITH_OPENAI) as client:
        only_fake = bearer(await client.new_key(providers=("fake",)))
        response = await client.http.post(URL, json=chat_body("openai/gpt"), headers=only_fake)
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "permission_denied"
        ok = await client.http.post(URL, json=chat_body("fake/echo"), headers=only_fake)
        assert ok.status_code == 200
    assert standin.count == 0


async def test_models_and_max_tokens_cap_are_checked_before_any_network(make_app, standin):
    async with make_app(**WITH_OPENAI) as client:
        key = bearer(await client.new_key(models=("openai/gpt-4o-mini",), max_tokens=50))
        other = await client.http.post(URL, json=chat_body("openai/gpt-4o"), headers=key)
        assert other.status_code == 403
        too_many = await client.http.post(
            URL, json=chat_body("openai/gpt-4o-mini", max_tokens=51), headers=key
        )
        assert too_many.status_code == 400
        assert too_many.json()["error"]["type"] == "max_tokens_exceeded"
        assert too_many.json()["error"]["param"] == "max_tokens"
        assert standin.count == 0
        ok = await client.http.post(URL, json=chat_body("openai/gpt-4o-mini"), headers=key)
        assert ok.status_code == 200
    # No max_tokens from the client: the gateway sends the key's cap.
    assert standin.received[0].body["max_tokens"] == 50


async def test_group_default_models_apply_to_keys_without_their_own(make_app, standin):
    async with make_app(**WITH_OPENAI, key_default_models="fake/echo") as client:
        key = bearer(await client.new_key())
        assert (await client.http.post(URL, json=chat_body(), headers=key)).status_code == 200
        refused = await client.http.post(URL, json=chat_body("openai/gpt"), headers=key)
        assert refused.status_code == 403
    assert standin.count == 0


def test_the_official_sdk_works_with_a_client_key_and_raises_on_a_bad_one(served):
    good = openai.OpenAI(base_url=served.url, api_key=served.key, max_retries=0)
    answer = good.chat.completions.create(
        model="fake/echo", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "echo: hi"
    bad = openai.OpenAI(base_url=served.url, api_key="tos_" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model="fake/echo", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "invalid_api_key"


# --- the cache ----------------------------------------------------------------------------------
async def test_a_revoked_key_stops_working_within_the_cache_ttl(make_app, clock):
    async with make_app(**FAKE, auth_cache_ttl_seconds=30) as client:
        key, secret = await _key(client)
        assert (await client.http.post(URL, json=chat_body(), headers=bearer(secret))).is_success
        await client.services.keys.revoke(key.id)
        clock.advance(29)  # still cached: the revocation is not seen yet
        assert (await client.http.post(URL, json=chat_body(), headers=bearer(secret))).is_success
        clock.advance(1.5)  # past the TTL: checked again, refused
        refused = await client.http.post(URL, json=chat_body(), headers=bearer(secret))
        assert refused.status_code == 401


async def test_a_cached_key_works_through_a_database_outage(make_app, postgres, clock):
    settings = {**FAKE, "auth_cache_ttl_seconds": 30, "auth_stale_max_seconds": 600}
    async with make_app(**settings) as client:
        _, cached = await _key(client)
        _, uncached = await _key(client)
        assert (await client.http.post(URL, json=chat_body(), headers=bearer(cached))).is_success
        postgres.stop()
        try:
            clock.advance(120)  # past the TTL, within the stale maximum
            ok = await client.http.post(URL, json=chat_body(), headers=bearer(cached))
            assert ok.status_code == 200
            refused = await client.http.post(URL, json=chat_body(), headers=bearer(uncached))
            assert refused.status_code == 503
            assert refused.json()["error"]["type"] == "auth_unavailable"
            assert "Retry-After" in refused.headers
            clock.advance(600)  # past the stale maximum: no more trust without the database
            late = await client.http.post(URL, json=chat_body(), headers=bearer(cached))
            assert late.status_code == 503
        finally:
            postgres.start()
        assert (await client.http.post(URL, json=chat_body(), headers=bearer(cached))).is_success


# --- brute force --------------------------------------------------------------------------------
async def test_twenty_failures_in_a_minute_block_the_address_for_the_rest_of_it(make_app, clock):
    clock.now = 60 * 1000  # the start of a clock minute
    async with make_app(**FAKE) as client:
        _, valid = await _key(client)
        for _ in range(20):
            bad = await client.http.post(URL, json=chat_body(), headers=bearer("tos_" + "b" * 43))
            assert bad.status_code == 401
        blocked = await client.http.post(URL, json=chat_body(), headers=bearer(valid))
        assert blocked.status_code == 429
        assert blocked.json()["error"]["type"] == "rate_limit_exceeded"
        assert 1 <= int(blocked.headers["Retry-After"]) <= 60
        assert await failures(client, "blocked") == 1
        clock.advance(60)  # the next minute
        assert (await client.http.post(URL, json=chat_body(), headers=bearer(valid))).is_success


@contextlib.contextmanager
def serving(database, **env: str) -> Iterator[str]:
    """`python -m techno_os_api.serve` as the container runs it; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "techno_os_api.serve", "--no-migrate"],
        env=subprocess_env(
            **database.env,
            API_HOST="127.0.0.1",
            API_PORT=str(port),
            VERITTA_LLM_ALLOWED_PROVIDERS="fake",
            API_ACCESS_LOG="false",
            **env,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, "serve exited"
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(20)


def _post(base: str, forwarded_for: str) -> int:
    response = httpx.post(
        f"{base}{URL}", json=chat_body(), headers={"X-Forwarded-For": forwarded_for}
    )
    return response.status_code


def test_x_forwarded_for_is_believed_only_from_the_proxy(database):
    # The proxy (127.0.0.1) is trusted: each forwarded client is counted on its own.
    with serving(database, API_FORWARDED_ALLOW_IPS="127.0.0.1") as base:
        assert [_post(base, "198.51.100.1") for _ in range(20)] == [401] * 20
        assert _post(base, "198.51.100.1") == 429
        assert _post(base, "198.51.100.2") == 401  # another client, not blocked
    # Nobody is trusted: a client varying the header does not escape, its address is blocked.
    with serving(database, API_FORWARDED_ALLOW_IPS="192.0.2.1") as base:
        assert [_post(base, f"198.51.100.{n}") for n in range(20)] == [401] * 20
        assert _post(base, "198.51.100.200") == 429
