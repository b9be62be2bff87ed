"""Self-test of the drills' provider stand-in (files/standin/llm_standin.py), on loopback, with no
host: each mode answers as the drills expect, and the control endpoint counts requests."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from ._support import REPO

# Drill equipment: runs with the drills (no host needed, loopback only).
pytestmark = pytest.mark.drill

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
AUTH = {"Authorization": "Bearer sk-standin", "Content-Type": "application/json"}


def _load_standin() -> Any:
    path = REPO / "files" / "standin" / "llm_standin.py"
    spec = importlib.util.spec_from_file_location("llm_standin", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def standin() -> Iterator[str]:
    server = _load_standin().make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 5):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers or AUTH)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def control(base: str, **body: Any) -> dict:
    return call(base + "/_control", body)[2]


def test_ok_mode_returns_a_chat_completion_with_usage(standin: str) -> None:
    control(standin, mode="ok", reset=True)
    status, _, body = call(standin + "/v1/chat/completions", CHAT)
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert call(standin + "/chat/completions", CHAT)[0] == 200  # base URL with /v1 too


def test_fail_modes_answer_500_and_429_with_retry_after(standin: str) -> None:
    control(standin, mode="fail500")
    assert call(standin + "/v1/chat/completions", CHAT)[0] == 500
    control(standin, mode="fail429")
    status, headers, body = call(standin + "/v1/chat/completions", CHAT)
    assert status == 429 and headers["Retry-After"] == "1" and body["error"]["type"]
    control(standin, mode="ok")


def test_hang_mode_holds_the_answer_for_hang_seconds(standin: str) -> None:
    control(standin, mode="hang", hang_seconds=0.5)
    started = time.monotonic()
    assert call(standin + "/v1/chat/completions", CHAT)[0] == 200
    assert time.monotonic() - started >= 0.5
    control(standin, mode="hang", hang_seconds=5)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        call(standin + "/v1/chat/completions", CHAT, timeout=0.3)
    control(standin, mode="ok", hang_seconds=60)


def test_control_counts_chat_requests_and_rejects_unknown_modes(standin: str) -> None:
    assert control(standin, mode="ok", reset=True)["requests"] == 0
    call(standin + "/v1/chat/completions", CHAT)
    call(standin + "/v1/chat/completions", CHAT)
    status, _, state = call(standin + "/_control", None, {})
    assert status == 200 and state == {
        "mode": "ok",
        "hang_seconds": 60.0,
        "requests": 2,
        "requests_by_format": {"openai": 2},
    }
    assert call(standin + "/_control", {"mode": "explode"})[0] == 400
    assert control(standin, reset=True) == {"mode": "ok", "hang_seconds": 60.0, "requests": 0}


def test_a_call_without_an_api_key_is_refused(standin: str) -> None:
    control(standin, mode="ok")
    headers = {"Content-Type": "application/json"}
    assert call(standin + "/v1/chat/completions", CHAT, headers)[0] == 401


def test_format_modes_fail_one_provider_api_while_another_answers(standin: str) -> None:
    state = control(standin, mode="ok", reset=True, format_modes={"anthropic": "fail500"})
    assert state["format_modes"] == {"anthropic": "fail500"}
    anthropic = {"model": "claude", "max_tokens": 8, "messages": CHAT["messages"]}
    headers = {"x-api-key": "sk-standin", "Content-Type": "application/json"}
    assert call(standin + "/v1/messages", anthropic, headers)[0] == 500
    assert call(standin + "/v1/chat/completions", CHAT)[0] == 200
    assert control(standin)["requests_by_format"] == {"anthropic": 1, "openai": 1}
    assert call(standin + "/_control", {"format_modes": {"anthropic": "explode"}})[0] == 400
    assert call(standin + "/_control", {"format_modes": {"mistral": "ok"}})[0] == 400
    assert "format_modes" not in control(standin, format_modes={})
    assert call(standin + "/v1/messages", anthropic, headers)[0] == 200
    control(standin, mode="ok", reset=True)
