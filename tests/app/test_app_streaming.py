"""Streams: the official SDK through every provider, and the stream's semantics (first token and
idle timeouts, a failure mid-stream, a client that leaves, fallbacks, include_usage), against
the real HTTP stand-in speaking each provider's native stream."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from app_helpers import AppClient, chat_body
from standin import Behaviour

URL = "/v1/chat/completions"
ALL = "fake,openai,anthropic,google,xai,deepseek"
KEYS = {f"{p}_api_key": f"key-{p}" for p in ("openai", "anthropic", "google", "xai", "deepseek")}
REMOTE = ("openai", "xai", "deepseek", "anthropic", "google")
DIALECT = {"xai": "xai", "deepseek": "deepseek"}


def model_of(provider: str) -> str:
    return f"{provider}/gemini-2.0-flash" if provider == "google" else f"{provider}/some-model"


def events(text: str) -> list[object]:
    """The data of each SSE event: decoded JSON, or the raw text ([DONE])."""
    out: list[object] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def content_of(chunks: list[object]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in chunks
        if isinstance(c, dict) and c.get("choices")
    )


async def stream(client: AppClient, **body: object) -> httpx.Response:
    request = chat_body(**{"stream": True, **body})  # type: ignore[arg-type]
    return await client.http.post(URL, json=request)


async def errors(client: AppClient, provider: str, error_type: str) -> float | None:
    return await client.metric("llm_errors_total", provider=provider, error_type=error_type)


async def failures(client: AppClient, provider: str) -> int:
    body = (await client.http.get("/llm/providers")).json()
    return next(p for p in body["providers"] if p["name"] == provider)["consecutive_failures"]


# --- the official SDK ----------------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["fake", *REMOTE])
def test_the_openai_sdk_streams_through_each_provider(serve_app, standin, provider):
    standin.behave(
        text=("Hel", "lo ", "there"),
        prompt_tokens=13,
        completion_tokens=21,
        dialect=DIALECT.get(provider, "openai"),
    )
    with serve_app(veritta_llm_allowed_providers=ALL) as served:
        sdk = openai.OpenAI(base_url=served.url, api_key=served.key, max_retries=0)
        model = "fake/echo" if provider == "fake" else model_of(provider)
        chunks = list(
            sdk.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "say hello"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices]
        usage = chunks[-1].usage
        assert all(c.model == model for c in chunks)
        assert finish[-1] == "stop" and not any(finish[:-1])
        assert chunks[-1].choices == [] and usage is not None
        if provider == "fake":
            assert text == "echo: say hello"
            assert (usage.prompt_tokens, usage.completion_tokens) == (2, 3)
        else:
            assert text == "Hello there"
            assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
                13,
                21,
                34,
            )
            assert served.metric("llm_tokens_total", provider=provider, type="prompt") == 13
            assert served.metric("llm_tokens_total", provider=provider, type="completion") == 21
            sent = standin.received[0]
            assert sent.body.get("stream") is True or ":streamGenerateContent" in sent.path
            if provider == "google":
                assert sent.path.endswith(":streamGenerateContent?alt=sse")
        assert served.metric("llm_time_to_first_token_seconds_count", provider=provider) == 1
        assert served.metric("llm_request_latency_seconds_count", provider=provider) == 1


def test_the_sdk_raises_on_a_failure_mid_stream(serve_app, standin):
    standin.behave(text=("one ", "two ", "three ", "four"), fail_after=3, fail_mode="drop")
    with serve_app(veritta_llm_allowed_providers=ALL) as served:
        sdk = openai.OpenAI(base_url=served.url, api_key=served.key, max_retries=0)
        seen = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in sdk.chat.completions.create(
                model="openai/gpt-4o-mini",
                messages=[{"role": "user", "content": "x"}],
                stream=True,
            ):
                seen.append(chunk.choices[0].delta.content)
        assert "interrupted" in caught.value.message
        assert "one " in seen


# --- include_usage -------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", REMOTE)
async def test_usage_chunk_only_when_asked_but_tokens_always_counted(make_app, standin, provider):
    standin.behave(prompt_tokens=5, completion_tokens=8, dialect=DIALECT.get(provider, "openai"))
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        response = await stream(client, model=model_of(provider))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-techno-os-provider"] == provider
        chunks = events(response.text)
        assert chunks[-1] == "[DONE]"
        assert all("usage" not in c for c in chunks[:-1] if isinstance(c, dict))
        assert content_of(chunks) == "stand-in reply"
        # Asked upstream anyway (OpenAI format), and counted.
        if provider in ("openai", "xai", "deepseek"):
            assert standin.received[0].body["stream_options"] == {"include_usage": True}
        assert await client.metric("llm_tokens_total", provider=provider, type="prompt") == 5
        assert await client.metric("llm_tokens_total", provider=provider, type="completion") == 8

        response = await stream(
            client, model=model_of(provider), stream_options={"include_usage": True}
        )
        chunks = events(response.text)
        usage_chunk = chunks[-2]
        assert isinstance(usage_chunk, dict)
        assert usage_chunk["choices"] == []
        assert usage_chunk["usage"]["total_tokens"] == 13
        assert all(c["usage"] is None for c in chunks[:-2] if isinstance(c, dict))
        assert await client.metric("llm_tokens_total", provider=provider, type="prompt") == 10


# --- failures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["openai", "anthropic", "google"])
@pytest.mark.parametrize("mode", ["drop", "reset", "error"])
async def test_a_failure_after_the_first_chunk_is_an_error_event(make_app, standin, provider, mode):
    standin.behave(text=("a ", "b ", "c ", "d ", "e"), fail_after=4, fail_mode=mode)
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        response = await stream(client, model=model_of(provider))
        assert response.status_code == 200
        chunks = events(response.text)
        assert "[DONE]" not in chunks
        last = chunks[-1]
        assert isinstance(last, dict)
        assert last["error"]["type"] == "stream_interrupted"
        assert last["error"]["code"] == "stream_interrupted"
        assert last["error"]["message"].startswith(f"the stream from {provider} was interrupted")
        assert content_of(chunks[:-1]).startswith("a ")
        assert await errors(client, provider, "stream_interrupted") == 1
        assert await failures(client, provider) == 1  # a breaker failure
        assert await client.metric("llm_request_latency_seconds_count", provider=provider) == 1


async def test_three_interrupted_streams_open_the_circuit(make_app, standin):
    standin.behave(text=("a ", "b ", "c"), fail_after=2, fail_mode="drop")
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for _ in range(3):
            await stream(client, model="openai/gpt")
        assert await client.metric("llm_circuit_state", provider="openai") == 1
        response = await stream(client, model="openai/gpt")
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "circuit_open"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google"])
async def test_a_failure_before_the_first_chunk_is_an_ordinary_error(make_app, standin, provider):
    standin.behave(fail_after=0, fail_mode="error", fail_status=529)
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        response = await stream(client, model=model_of(provider))
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "provider_error"
        assert await errors(client, provider, "provider_error") == 1
        assert await errors(client, provider, "stream_interrupted") == 0


async def test_idle_timeout_ends_the_stream_with_an_error_event(make_app, standin):
    # The role chunk and "a ", then nothing.
    standin.behave(text=("a ", "b ", "c"), fail_after=2, fail_mode="hang")
    async with make_app(
        veritta_llm_allowed_providers=ALL, **KEYS, llm_stream_idle_timeout_seconds=0.3
    ) as client:
        started = time.monotonic()
        response = await stream(client, model="xai/grok")
        elapsed = time.monotonic() - started
        chunks = events(response.text)
        error = chunks[-1]
        assert isinstance(error, dict)
        assert "no event for 0.3s (LLM_STREAM_IDLE_TIMEOUT_SECONDS)" in error["error"]["message"]
        assert 0.3 <= elapsed < 2
        assert content_of(chunks) == "a "
        assert await errors(client, "xai", "stream_interrupted") == 1
        # The upstream connection is closed (waited for in a thread: the loop must run).
        assert await asyncio.to_thread(standin.exchange().wait_closed, 1.0) is not None


async def test_keepalives_neither_count_as_the_first_token_nor_reset_its_timeout(make_app, standin):
    standin.behave(first_chunk_delay=3, keepalive_interval=0.05)
    async with make_app(
        veritta_llm_allowed_providers=ALL, **KEYS, llm_timeout_seconds=0.4
    ) as client:
        for provider in ("deepseek", "anthropic"):  # SSE comments; Anthropic ping events
            started = time.monotonic()
            response = await stream(client, model=model_of(provider))
            assert response.status_code == 504, response.text
            assert response.json()["error"]["type"] == "timeout"
            assert time.monotonic() - started < 2
            assert await errors(client, provider, "timeout") == 1
            assert await failures(client, provider) == 1


@pytest.mark.parametrize("provider", ["deepseek", "anthropic", "google"])
async def test_hidden_reasoning_keeps_a_stream_alive_but_is_not_shown(make_app, standin, provider):
    # Reasoning for longer than both timeouts taken whole, 0.08 s between frames.
    standin.behave(
        thinking=tuple(f"step {i} " for i in range(6)),
        text=("the ", "answer"),
        chunk_delay=0.08,
        dialect="deepseek" if provider == "deepseek" else "openai",
    )
    async with make_app(
        veritta_llm_allowed_providers=ALL,
        **KEYS,
        llm_timeout_seconds=0.3,
        llm_stream_idle_timeout_seconds=0.3,
    ) as client:
        response = await stream(client, model=model_of(provider))
        assert response.status_code == 200, response.text
        chunks = events(response.text)
        assert chunks[-1] == "[DONE]", chunks[-2:]
        assert content_of(chunks) == "the answer"
        assert "step" not in response.text


async def test_time_to_first_token_is_measured_past_the_keepalives(make_app, standin):
    standin.behave(first_chunk_delay=0.3, keepalive_interval=0.05)
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        response = await stream(client, model="deepseek/deepseek-chat")
        assert events(response.text)[-1] == "[DONE]"
        samples = await client.metrics()
        ttft = samples[
            ("llm_time_to_first_token_seconds_sum", frozenset({("provider", "deepseek")}))
        ]
        assert ttft >= 0.3


def test_a_client_that_leaves_cancels_the_upstream_request_at_once(serve_app, standin):
    standin.behave(text=tuple(f"w{i} " for i in range(50)), chunk_delay=0.2)
    with serve_app(veritta_llm_allowed_providers=ALL) as served:
        with (
            httpx.Client(timeout=10) as http,
            http.stream(
                "POST",
                f"{served.url}/chat/completions",
                json=chat_body("openai/gpt-4o-mini", stream=True),
                headers={"Authorization": f"Bearer {served.key}"},
            ) as response,
        ):
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            left_at = time.monotonic()
            # Leaving the block closes the connection.
        closed_at = standin.exchange().wait_closed(2.0)
        assert closed_at is not None, "the provider's connection was left open"
        assert closed_at - left_at < 1.0
        assert standin.exchange().frames_sent < 50
        # No verdict on the provider: no error, no failure, and the slot is free again.
        time.sleep(0.1)
        assert (
            served.metric("llm_errors_total", provider="openai", error_type="stream_interrupted")
            == 0
        )
        providers = httpx.get(
            f"{served.root}/llm/providers", headers={"Authorization": f"Bearer {served.key}"}
        ).json()["providers"]
        assert next(p for p in providers if p["name"] == "openai")["consecutive_failures"] == 0
        standin.behave()
        sdk = openai.OpenAI(base_url=served.url, api_key=served.key, max_retries=0)
        again = sdk.chat.completions.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
        assert again.choices[0].message.content == "stand-in reply"


async def test_a_disconnect_releases_the_connection_slot(make_app, standin):
    # One connection allowed: a stream abandoned by its client must give it back.
    standin.behave(text=tuple(f"w{i} " for i in range(30)), chunk_delay=0.1)
    async with make_app(
        veritta_llm_allowed_providers=ALL,
        **KEYS,
        llm_max_connections=1,
        llm_pool_timeout_seconds=0.5,
    ) as client:
        gateway = client.services.gateway
        body = chat_body("openai/gpt", stream=True)
        from techno_os_api.llm.schemas import ChatCompletionRequest

        key = await client.services.authenticator.authenticate(f"Bearer {client.key}", "t")
        opened = await gateway.stream(ChatCompletionRequest.model_validate(body), key)
        assert (await opened.next()) is not None
        await opened.aclose()
        # (waited for in a thread: the event loop must run to close the socket)
        assert await asyncio.to_thread(standin.exchange().wait_closed, 1.0) is not None
        standin.behave()
        response = await stream(client, model="openai/gpt")
        assert response.status_code == 200


async def test_a_stream_holds_its_connection_slot_until_it_ends(make_app, standin):
    # LLM_MAX_CONNECTIONS=1: while one stream runs, the next call waits LLM_POOL_TIMEOUT_SECONDS
    # for the slot, then gets 503 overloaded; the provider is not blamed.
    standin.behave(text=tuple(f"w{i} " for i in range(8)), chunk_delay=0.1)
    async with make_app(
        veritta_llm_allowed_providers=ALL,
        **KEYS,
        llm_max_connections=1,
        llm_pool_timeout_seconds=0.2,
    ) as client:
        running = asyncio.ensure_future(stream(client, model="openai/gpt"))
        await asyncio.to_thread(standin.wait_count, 1)
        refused = await client.http.post(URL, json=chat_body("openai/gpt"))
        assert refused.status_code == 503
        assert refused.json()["error"]["type"] == "overloaded"
        assert refused.headers["Retry-After"] == "1"
        assert events((await running).text)[-1] == "[DONE]"
        assert await errors(client, "openai", "overloaded") == 1
        assert await failures(client, "openai") == 0
        assert (await client.http.post(URL, json=chat_body("openai/gpt"))).status_code == 200


# --- fallbacks ----------------------------------------------------------------------------------
FALLBACKS = {
    "veritta_llm_allowed_providers": ALL,
    **KEYS,
    "llm_fallbacks": "openai=anthropic/claude-3-5-haiku-latest,google/gemini-2.0-flash",
}


async def test_a_stream_falls_back_while_the_primary_circuit_is_open(make_app, standin):
    async with make_app(**FALLBACKS) as client:
        client.services.gateway.breaker("openai")._open()
        response = await stream(client, model="openai/gpt-4o-mini")
        assert response.status_code == 200
        assert response.headers["x-techno-os-provider"] == "anthropic"
        chunks = events(response.text)
        assert {c["model"] for c in chunks if isinstance(c, dict)} == {
            "anthropic/claude-3-5-haiku-latest"
        }
        assert content_of(chunks) == "stand-in reply"
        assert [r.path for r in standin.received] == ["/v1/messages"]
        assert (
            await client.metric(
                "llm_fallbacks_total", from_provider="openai", to_provider="anthropic"
            )
            == 1
        )


async def test_a_stream_falls_back_after_a_failure_before_its_first_chunk(make_app, standin):
    standin.script(Behaviour(status=503), Behaviour(first_chunk_delay=5), Behaviour())
    async with make_app(**FALLBACKS, llm_timeout_seconds=0.5) as client:
        response = await stream(client, model="openai/gpt-4o-mini")
        assert response.status_code == 200
        assert response.headers["x-techno-os-provider"] == "google"
        assert [r.path.split("/")[-1] for r in standin.received] == [
            "completions",
            "messages",
            "gemini-2.0-flash:streamGenerateContent?alt=sse",
        ]
        assert await errors(client, "openai", "provider_error") == 1
        assert await errors(client, "anthropic", "timeout") == 1


async def test_no_fallback_after_a_client_error_or_mid_stream(make_app, standin):
    async with make_app(**FALLBACKS) as client:
        standin.behave(status=400)
        response = await stream(client, model="openai/gpt-4o-mini")
        assert response.status_code == 400
        assert standin.count == 1
        standin.behave(fail_after=2, fail_mode="drop")
        response = await stream(client, model="openai/gpt-4o-mini")
        assert events(response.text)[-1]["error"]["type"] == "stream_interrupted"  # type: ignore[index]
        assert standin.count == 2


async def test_fake_streams_word_by_word(make_app):
    async with make_app(veritta_llm_allowed_providers="fake") as client:
        response = await stream(client, content="one two three", max_tokens=3)
        chunks = [c for c in events(response.text) if isinstance(c, dict)]
        assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == [
            "echo:",
            " one",
            " two",
        ]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
