"""The official OpenAI Python SDK, unchanged, against the app served by uvicorn on loopback."""

from __future__ import annotations

import openai
import pytest


def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key=served.key, max_retries=0)


def test_sdk_chat_completion_with_fake_provider(served):
    completion = client(served).chat.completions.create(
        model="fake/echo",
        messages=[{"role": "user", "content": "hello from the sdk"}],
        max_tokens=20,
        temperature=0,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "echo: hello from the sdk"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    assert completion.usage.total_tokens == 9


def test_sdk_through_to_an_openai_format_provider(served, standin):
    completion = client(served).chat.completions.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
    )
    assert completion.choices[0].message.content == "stand-in reply"
    assert completion.usage is not None and completion.usage.completion_tokens == 11
    # The client's key stays with the gateway; the provider gets the gateway's own key.
    assert standin.received[0].headers["authorization"] == "Bearer sk-upstream"


def test_sdk_sees_403_with_the_message(served, standin):
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client(served).chat.completions.create(
            model="anthropic/claude", messages=[{"role": "user", "content": "x"}]
        )
    assert "not allowed by VERITTA_LLM_ALLOWED_PROVIDERS" in caught.value.message
    assert standin.count == 0


def test_sdk_sees_422_for_an_invalid_request(served):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client(served).chat.completions.create(
            model="fake/echo", messages=[{"role": "user", "content": "x"}], temperature=5
        )
    assert "temperature" in caught.value.message
