"""The official OpenAI Python SDK, unchanged, against the app served by uvicorn on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import openai
import pytest
import uvicorn
from pgserver import PostgresServer
from standin import StandIn
from techno_os_api.application import create_app
from techno_os_api.core.config import Settings


@pytest.fixture
def served(database: PostgresServer, standin: StandIn) -> Iterator[str]:
    """The app under a real uvicorn on a free loopback port; yields its /v1 base URL."""
    settings = Settings(
        **database.settings,
        veritta_llm_allowed_providers="fake,openai",
        openai_api_key="sk-upstream",
        openai_base_url=standin.url,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="client-key-unused", max_retries=0)


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
    # The client's key stays with the client; the provider gets the gateway's key.
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
