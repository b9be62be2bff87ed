"""POST /v1/chat/completions with the in-process fake provider, and request validation."""

from __future__ import annotations

import pytest
from app_helpers import chat_body

URL = "/v1/chat/completions"


async def test_fake_provider_answers_in_openai_shape(make_app):
    async with make_app(veritta_llm_allowed_providers="fake") as client:
        response = await client.http.post(URL, json=chat_body("fake/echo", "hello big world"))
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "fake/echo"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: hello big world"},
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_bare_model_goes_to_llm_provider(make_app, standin):
    async with make_app(
        veritta_llm_allowed_providers="fake,openai", llm_provider="openai", openai_api_key="k"
    ) as client:
        response = await client.http.post(URL, json=chat_body("gpt-4o-mini"))
        assert response.status_code == 200
        assert standin.received[0].body["model"] == "gpt-4o-mini"
        assert await client.metric("llm_tokens_total", provider="openai", type="prompt") == 7
        assert await client.metric("llm_tokens_total", provider="fake", type="prompt") == 0


async def test_bare_model_defaults_to_fake(make_app, standin):
    async with make_app(veritta_llm_allowed_providers="fake,openai") as client:
        response = await client.http.post(URL, json=chat_body("anything", "one two"))
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "echo: one two"
        assert await client.metric("llm_tokens_total", provider="fake", type="prompt") == 2
        assert await client.metric("llm_tokens_total", provider="fake", type="completion") == 3
        assert await client.metric("llm_request_latency_seconds_count", provider="fake") == 1
    assert standin.count == 0


async def test_fake_provider_counts_tokens_across_calls(make_app):
    async with make_app(veritta_llm_allowed_providers="fake") as client:
        for _ in range(3):
            await client.http.post(URL, json=chat_body("fake/echo", "a b c d"))
        assert await client.metric("llm_tokens_total", provider="fake", type="prompt") == 12
        assert await client.metric("llm_tokens_total", provider="fake", type="completion") == 15


async def test_max_tokens_truncates_with_finish_reason_length(make_app):
    async with make_app(veritta_llm_allowed_providers="fake") as client:
        response = await client.http.post(
            URL, json=chat_body("fake/echo", "one two three four", max_tokens=2)
        )
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "echo: one"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
        ({"model": "fake/echo"}, "messages: Field required"),
        ({"model": "fake/echo", "messages": []}, "messages: List should have at least 1 item"),
        ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model: String should"),
        (
            {"model": "fake/echo", "messages": [{"role": "wizard", "content": "x"}]},
            "messages.0.role: Input should be",
        ),
        (chat_body(temperature=3), "temperature: Input should be less than or equal to 2"),
        (chat_body(max_tokens=0), "max_tokens: Input should be greater than or equal to 1"),
        (
            chat_body(stream_options={"include_usage": True}),
            "stream_options: only allowed when stream is true",
        ),
        (chat_body(stop=["a", "b", "c", "d", "e"]), "stop: up to 4 sequences"),
        (chat_body(tool_choice="required"), "tool_choice: needs tools"),
        ([1, 2], "body: must be a JSON object"),
    ],
)
async def test_invalid_body_is_422_with_a_clear_message(make_app, body, fragment):
    async with make_app(veritta_llm_allowed_providers="fake") as client:
        response = await client.http.post(URL, json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"]


async def test_non_json_body_is_422(make_app):
    async with make_app(veritta_llm_allowed_providers="fake") as client:
        response = await client.http.post(
            URL, content=b"model=fake", headers={"content-type": "text/plain"}
        )
    assert response.status_code == 422
    assert "JSON" in response.json()["error"]["message"]


async def test_provider_without_model_is_400(make_app):
    async with make_app(veritta_llm_allowed_providers="fake") as client:
        response = await client.http.post(URL, json=chat_body("fake/"))
    assert response.status_code == 400
    assert "names a provider but no model" in response.json()["error"]["message"]


async def test_unknown_route_is_json_404(make_app):
    async with make_app() as client:
        response = await client.http.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
