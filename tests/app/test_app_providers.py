"""Each provider's wire format, over real HTTP to the stand-in: the request it sends and the
tokens it reads from the provider's own usage fields."""

from __future__ import annotations

import pytest
from app_helpers import chat_body

URL = "/v1/chat/completions"
ALL = "fake,openai,anthropic,google,xai,deepseek"
KEYS = {f"{p}_api_key": f"key-{p}" for p in ("openai", "anthropic", "google", "xai", "deepseek")}

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {
        "role": "user",
        "content": [{"type": "text", "text": "how "}, {"type": "text", "text": "so?"}],
    },
]


@pytest.mark.parametrize(
    ("provider", "path"),
    [
        ("openai", "/chat/completions"),
        ("xai", "/chat/completions"),
        ("deepseek", "/chat/completions"),
        ("anthropic", "/v1/messages"),
        ("google", "/v1beta/models/gemini-2.0-flash:generateContent"),
    ],
)
async def test_tokens_are_read_from_each_wire_format(make_app, standin, provider, path):
    standin.behave(prompt_tokens=13, completion_tokens=21, text=f"from {provider}")
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        model = "gemini-2.0-flash" if provider == "google" else "some-model"
        response = await client.http.post(
            URL, json={"model": f"{provider}/{model}", "messages": MESSAGES, "max_tokens": 50}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "chat.completion"
        assert body["model"] == f"{provider}/{model}"
        assert body["choices"][0]["message"] == {"role": "assistant", "content": f"from {provider}"}
        assert body["choices"][0]["finish_reason"] == "stop"
        usage = body["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
            13,
            21,
            34,
        )
        assert await client.metric("llm_tokens_total", provider=provider, type="prompt") == 13
        assert await client.metric("llm_tokens_total", provider=provider, type="completion") == 21
        assert await client.metric("llm_request_latency_seconds_count", provider=provider) == 1
    assert standin.count == 1
    assert standin.received[0].path == path


async def test_openai_format_request(make_app, standin):
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        await client.http.post(
            URL,
            json={"model": "openai/gpt-4o-mini", "messages": MESSAGES, "temperature": 0.5},
        )
    sent = standin.received[0]
    assert sent.headers["authorization"] == "Bearer key-openai"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["temperature"] == 0.5
    assert sent.body["messages"][0] == {"role": "system", "content": "be brief"}
    # Lists of text parts stay separate parts.
    assert sent.body["messages"][3] == {
        "role": "user",
        "content": [{"type": "text", "text": "how "}, {"type": "text", "text": "so?"}],
    }


async def test_anthropic_format_request(make_app, standin):
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        await client.http.post(URL, json={"model": "anthropic/claude-x", "messages": MESSAGES})
    sent = standin.received[0]
    assert sent.headers["x-api-key"] == "key-anthropic"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.body["model"] == "claude-x"
    assert sent.body["system"] == "be brief"
    assert sent.body["max_tokens"] == 4096  # required by the Messages API: LLM_DEFAULT_MAX_TOKENS
    assert [m["role"] for m in sent.body["messages"]] == ["user", "assistant", "user"]


async def test_google_key_travels_in_a_header_not_the_url(make_app, standin):
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        await client.http.post(
            URL, json={"model": "google/gemini-2.0-flash", "messages": MESSAGES, "max_tokens": 9}
        )
    sent = standin.received[0]
    assert "key-google" not in sent.path
    assert "key=" not in sent.path
    assert sent.headers["x-goog-api-key"] == "key-google"
    assert sent.body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert [c["role"] for c in sent.body["contents"]] == ["user", "model", "user"]
    assert sent.body["generationConfig"] == {"maxOutputTokens": 9}


async def test_deepseek_and_xai_get_system_for_developer_role(make_app, standin):
    body = {"model": "xai/grok", "messages": [{"role": "developer", "content": "x"}]}
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        await client.http.post(URL, json=body)
    assert standin.received[0].body["messages"][0]["role"] == "system"
    assert standin.received[0].headers["authorization"] == "Bearer key-xai"


@pytest.mark.parametrize(
    "body", [{"choices": []}, {"id": "x"}, ["not", "an", "object"], {"choices": [{"message": 1}]}]
)
async def test_unreadable_provider_body_is_a_provider_error(make_app, standin, body):
    standin.behave(body=body)
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        response = await client.http.post(URL, json=chat_body("openai/gpt"))
        assert response.status_code == 502
        assert response.json()["error"]["type"] == "provider_error"
        assert "cannot read" in response.json()["error"]["message"]
        assert (
            await client.metric("llm_errors_total", provider="openai", error_type="provider_error")
            == 1
        )
