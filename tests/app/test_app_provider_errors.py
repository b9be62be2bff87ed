"""A provider's errors in OpenAI's shape, whole and streamed (before the first chunk), for every
wire format: whose problem each status is, what the breaker learns, the retry hints passed on,
and what never reaches a client (secrets, huge or inflating bodies)."""

from __future__ import annotations

import pytest
from app_helpers import AppClient, chat_body
from standin import Behaviour

URL = "/v1/chat/completions"
ALL = "fake,openai,anthropic,google,xai,deepseek"
KEYS = {f"{p}_api_key": f"key-{p}" for p in ("openai", "anthropic", "google", "xai", "deepseek")}
PROVIDERS = ("openai", "xai", "deepseek", "anthropic", "google")


def model_of(provider: str) -> str:
    return f"{provider}/gemini-2.0-flash" if provider == "google" else f"{provider}/some-model"


def dialect(provider: str) -> str:
    return provider if provider in ("xai", "deepseek") else "openai"


async def post(client: AppClient, provider: str, streamed: bool):
    extra = {"stream": True} if streamed else {}
    return await client.http.post(URL, json=chat_body(model_of(provider), **extra))


async def failures(client: AppClient, provider: str) -> int:
    body = (await client.http.get("/llm/providers")).json()
    return next(p for p in body["providers"] if p["name"] == provider)["consecutive_failures"]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_each_status_is_classified_once_and_the_same_way(
    make_app, standin, provider, streamed
):
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for status in (400, 404, 422):  # the client's request: 400 with the provider's message
            standin.behave(
                status=status, error_message=f"bad thing {status}", dialect=dialect(provider)
            )
            response = await post(client, provider, streamed)
            assert response.status_code == 400, (status, response.text)
            error = response.json()["error"]
            assert set(error) >= {"message", "type", "param", "code"}
            assert (error["type"], error["code"]) == ("client_error", "client_error")
            assert error["message"] == f"{provider} rejected the request: bad thing {status}"
            assert error["upstream_status"] == status
            assert response.headers["x-should-retry"] == "false"
        for status in (401, 402, 403):  # the operator's key or account: 502, do not retry
            standin.behave(status=status, dialect=dialect(provider))
            response = await post(client, provider, streamed)
            assert response.status_code == 502
            error = response.json()["error"]
            assert error["type"] == "provider_auth_error"
            assert f"check {provider.upper()}_API_KEY" in error["message"]
            assert response.headers["x-should-retry"] == "false"
        assert await failures(client, provider) == 0  # none of these touched the breaker
        for status in (500, 503):
            standin.behave(status=status, dialect=dialect(provider))
            response = await post(client, provider, streamed)
            assert response.status_code == 502
            assert response.json()["error"]["type"] == "provider_error"
        assert await failures(client, provider) == 2


async def test_xai_refuses_a_wrong_key_with_a_400_that_is_an_auth_error(make_app, standin):
    standin.behave(
        status=400,
        dialect="xai",
        error_message="Incorrect API key provided: xa***yz. You can obtain an API key from ...",
    )
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for streamed in (False, True):
            response = await post(client, "xai", streamed)
            assert response.status_code == 502
            assert response.json()["error"]["type"] == "provider_auth_error"
            assert "check XAI_API_KEY" in response.json()["error"]["message"]
        assert await failures(client, "xai") == 0


async def test_gemini_refuses_a_wrong_key_with_a_400_that_is_an_auth_error(make_app, standin):
    standin.behave(
        status=400,
        body={
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                    }
                ],
            }
        },
    )
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for streamed in (False, True):
            response = await post(client, "google", streamed)
            assert response.status_code == 502
            assert response.json()["error"]["type"] == "provider_auth_error"
            assert "check GOOGLE_API_KEY" in response.json()["error"]["message"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_429_passes_its_retry_after_and_holds_the_circuit_open(
    make_app, standin, clock, provider
):
    # Gemini gives the hint in its body (RetryInfo.retryDelay), the others in headers.
    standin.behave(status=429, retry_after=40, dialect=dialect(provider))
    if provider == "google":
        standin.behave(status=429, retry_after=40, headers={"Retry-After": ""})
    async with make_app(
        veritta_llm_allowed_providers=ALL,
        **KEYS,
        llm_circuit_failure_threshold=1,
        llm_circuit_cooldown_seconds=5,
    ) as client:
        response = await post(client, provider, streamed=True)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "40"
        assert response.json()["error"]["type"] == "provider_rate_limited"
        clock.advance(30)  # past the cooldown, not past the provider's Retry-After
        response = await post(client, provider, streamed=False)
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "circuit_open"
        assert response.headers["Retry-After"] == "10"
        assert standin.count == 1


async def test_provider_error_messages_never_carry_a_secret(make_app, standin):
    standin.behave(status=400, echo_headers=True)
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for provider in PROVIDERS:
            for streamed in (False, True):
                response = await post(client, provider, streamed)
                assert f"key-{provider}" not in response.text
                assert "[redacted]" in response.json()["error"]["message"]


async def test_a_secret_in_an_error_event_mid_stream_is_redacted(make_app, standin):
    standin.behave(fail_after=3, fail_mode="error", error_message="oops key-openai leaked")
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        response = await post(client, "openai", streamed=True)
    assert "key-openai" not in response.text
    assert "oops [redacted] leaked" in response.text


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_gzip_bomb_is_stopped_at_the_size_limit(make_app, standin, streamed):
    standin.behave(gzip=True, text=("x" * 65536,) * 40)  # 2.5 MiB of text, gzip-encoded
    if not streamed:
        standin.behave(**vars(Behaviour.gzip_bomb(1 << 30)))
    async with make_app(
        veritta_llm_allowed_providers=ALL, **KEYS, llm_max_response_bytes=1 << 20
    ) as client:
        response = await post(client, "openai", streamed)
        if streamed:  # cut after the first chunk: in-band
            assert response.status_code == 200
            assert "LLM_MAX_RESPONSE_BYTES" in response.text.rsplit("data: ", 1)[1]
        else:
            assert response.status_code == 502
            assert "LLM_MAX_RESPONSE_BYTES" in response.json()["error"]["message"]


async def test_a_gzip_encoded_stream_is_read(make_app, standin):
    standin.behave(gzip=True, text=("Hel", "lo"))
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for provider in ("openai", "anthropic", "google"):
            response = await post(client, provider, streamed=True)
            assert response.text.endswith("data: [DONE]\n\n")
            assert '"content":"Hel"' in response.text


@pytest.mark.parametrize(
    "mutate",
    [
        lambda body: {**body, "usage": {**body["usage"], "prompt_tokens": "13"}},
        lambda body: {**body, "choices": {}},
        lambda body: {**body, "choices": [{"message": {"content": 5}}]},
    ],
    ids=["string-count", "choices-object", "content-number"],
)
async def test_an_answer_of_the_wrong_shape_is_a_provider_error_not_a_500(
    make_app, standin, mutate
):
    standin.behave(mutate=mutate)
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        response = await post(client, "openai", streamed=False)
    assert response.status_code == 502
    assert "cannot read" in response.json()["error"]["message"]
