"""What comes back, whole and streamed, from every provider's native answer: finish reasons
(every value of each provider's enum), refusals, a blocked prompt, usage with its cache and
reasoning details, and the metrics moving by the same numbers."""

from __future__ import annotations

import json

import pytest
from app_helpers import AppClient, chat_body
from standin import Behaviour, ToolCall, wire

URL = "/v1/chat/completions"
ALL = "fake,openai,anthropic,google,xai,deepseek"
KEYS = {f"{p}_api_key": f"key-{p}" for p in ("openai", "anthropic", "google", "xai", "deepseek")}
FORMAT = {
    "openai": wire.OPENAI,
    "xai": wire.OPENAI,
    "deepseek": wire.OPENAI,
    "anthropic": wire.ANTHROPIC,
    "google": wire.GEMINI,
}
NATIVE = {
    "openai": wire.OPENAI_FINISH_REASONS,
    "xai": wire.OPENAI_FINISH_REASONS,
    "deepseek": wire.DEEPSEEK_FINISH_REASONS,
    "anthropic": wire.ANTHROPIC_STOP_REASONS,
    "google": wire.GEMINI_FINISH_REASONS,
}


def model_of(provider: str) -> str:
    return f"{provider}/gemini-2.0-flash" if provider == "google" else f"{provider}/some-model"


def dialect(provider: str) -> str:
    return provider if provider in ("xai", "deepseek") else "openai"


class Answer:
    """One chat answer, whole or streamed, reduced to what the tests compare."""

    def __init__(self, status: int, body: dict, events: list | None = None) -> None:
        self.status = status
        self.body = body
        self.events = events

    @property
    def error(self) -> dict | None:
        if self.events is not None:
            last = self.events[-1] if self.events else None
            return last.get("error") if isinstance(last, dict) else None
        return self.body.get("error")

    @property
    def finish_reason(self) -> str | None:
        if self.events is not None:
            reasons = [
                c["choices"][0]["finish_reason"]
                for c in self.events
                if isinstance(c, dict) and c.get("choices")
            ]
            return reasons[-1] if reasons else None
        return self.body["choices"][0]["finish_reason"]

    def field(self, name: str) -> str | None:
        if self.events is not None:
            pieces = [
                c["choices"][0]["delta"].get(name)
                for c in self.events
                if isinstance(c, dict) and c.get("choices")
            ]
            text = "".join(p for p in pieces if p)
            return text or None
        return self.body["choices"][0]["message"].get(name)

    @property
    def usage(self) -> dict:
        if self.events is not None:
            return next(c["usage"] for c in self.events if isinstance(c, dict) and c.get("usage"))
        return self.body["usage"]


async def ask(client: AppClient, streamed: bool, **body: object) -> Answer:
    extra = {"stream": True, "stream_options": {"include_usage": True}} if streamed else {}
    response = await client.http.post(URL, json=chat_body(**{**extra, **body}))  # type: ignore[arg-type]
    if streamed and response.headers["content-type"].startswith("text/event-stream"):
        events = []
        for block in response.text.split("\n\n"):
            if block.strip():
                data = block.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
        return Answer(response.status_code, {}, events)
    return Answer(response.status_code, response.json())


async def consecutive_failures(client: AppClient, provider: str) -> int:
    body = (await client.http.get("/llm/providers")).json()
    return next(p for p in body["providers"] if p["name"] == provider)["consecutive_failures"]


# --- finish reasons ----------------------------------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("provider", list(NATIVE))
async def test_every_native_finish_reason_is_one_of_openais(make_app, standin, provider, streamed):
    table = wire.PROPOSED_OPENAI_FINISH_REASON[FORMAT[provider]]
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for native in NATIVE[provider]:
            standin.behave(finish_reason=native, dialect=dialect(provider))
            answer = await ask(client, streamed, model=model_of(provider))
            expected = table[native]
            if native == "function_call":  # the deprecated `functions` are refused: tool calls
                expected = "tool_calls"
            if expected is None and provider == "deepseek":
                # Not a finish reason: the provider ran out of capacity, a provider failure.
                assert answer.error is not None, native
                kind = "stream_interrupted" if streamed else "provider_error"
                assert answer.error["type"] == kind
                assert "insufficient system resource" in answer.error["message"]
                continue
            if expected is None:  # Gemini's model failures, with text that came: kept
                expected = "stop"
            assert answer.status == 200, (native, answer.body)
            assert answer.finish_reason == expected, native
            assert answer.field("content") == "stand-in reply", native
    assert len(standin.received) == len(NATIVE[provider])


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("native", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"])
async def test_a_gemini_model_failure_without_output_is_a_502_not_a_breaker_failure(
    make_app, standin, native, streamed
):
    standin.behave(finish_reason=native, text="")
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        answer = await ask(client, streamed, model=model_of("google"))
        assert answer.status == 502
        assert answer.error is not None and answer.error["type"] == "model_error"
        assert native in answer.error["message"]
        assert await consecutive_failures(client, "google") == 0
        assert (
            await client.metric("llm_errors_total", provider="google", error_type="model_error")
            == 1
        )


async def test_an_unknown_finish_reason_is_answered_as_stop(make_app, standin):
    standin.behave(finish_reason="brand_new_reason")
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for streamed in (False, True):
            answer = await ask(client, streamed, model="openai/gpt")
            assert answer.finish_reason == "stop"


# --- refusals and filters ----------------------------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_an_openai_refusal_is_message_refusal(make_app, standin, streamed):
    standin.behave(refusal="I can't help with that.")
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        answer = await ask(client, streamed, model="openai/gpt")
        assert answer.status == 200
        assert answer.field("refusal") == "I can't help with that."
        assert answer.finish_reason == "stop"
        if not streamed:
            assert answer.body["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_an_anthropic_refusal_is_content_filter_with_its_explanation(
    make_app, standin, streamed
):
    standin.behave(refusal="Declined by policy.", text="")
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        answer = await ask(client, streamed, model="anthropic/claude")
        assert answer.status == 200
        assert answer.finish_reason == "content_filter"
        assert answer.field("refusal") == "Declined by policy."
        assert await consecutive_failures(client, "anthropic") == 0


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_blocked_gemini_prompt_is_a_content_filter_answer_not_a_failure(
    make_app, standin, streamed
):
    standin.behave(blocked="SAFETY", prompt_tokens=8)
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for _ in range(4):  # more than the breaker's threshold: it stays closed
            answer = await ask(client, streamed, model=model_of("google"))
            assert answer.status == 200
            assert answer.finish_reason == "content_filter"
            assert not answer.field("content")
            assert answer.usage["prompt_tokens"] == 8
        assert await consecutive_failures(client, "google") == 0
        assert await client.metric("llm_circuit_state", provider="google") == 0
        assert (
            await client.metric("llm_errors_total", provider="google", error_type="provider_error")
            == 0
        )


async def test_an_openai_prompt_filter_400_is_the_clients_error(make_app, standin):
    standin.behave(status=400, error_code="content_filter", error_message="flagged by policy")
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for streamed in (False, True):
            answer = await ask(client, streamed, model="openai/gpt")
            assert answer.status == 400
            assert "flagged by policy" in answer.error["message"]  # type: ignore[index]
        assert await consecutive_failures(client, "openai") == 0


# --- usage -------------------------------------------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("provider", list(NATIVE))
async def test_usage_counts_every_billed_token_with_its_details(
    make_app, standin, provider, streamed
):
    # Neutral, inclusive numbers; the stand-in renders them in each provider's accounting.
    writes = 20 if provider in ("openai", "anthropic") else 0
    standin.behave(
        prompt_tokens=100,
        completion_tokens=50,
        cached_tokens=30,
        cache_write_tokens=writes,
        reasoning_tokens=10,
        thinking="let me think",
        dialect=dialect(provider),
    )
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        answer = await ask(client, streamed, model=model_of(provider))
        usage = answer.usage
        assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
            100,
            50,
            150,
        )
        assert usage["prompt_tokens_details"]["cached_tokens"] == 30
        assert usage["completion_tokens_details"] == {"reasoning_tokens": 10}
        if writes:
            assert usage["prompt_tokens_details"]["cache_write_tokens"] == writes
        # Thinking is counted, never shown as the answer.
        assert answer.field("content") == "stand-in reply"
        assert await client.metric("llm_tokens_total", provider=provider, type="prompt") == 100
        assert await client.metric("llm_tokens_total", provider=provider, type="completion") == 50


# --- tool calls in the answer ------------------------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("provider", list(NATIVE))
async def test_tool_calls_come_back_in_openais_shape(make_app, standin, provider, streamed):
    standin.behave(
        text="",
        tool_calls=(
            ToolCall("get_weather", {"city": "Paris"}),
            ToolCall("get_time", {"zone": "Europe/Paris"}),
        ),
        dialect=dialect(provider),
    )
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("get_weather", "get_time")
    ]
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        extra = {"stream": True} if streamed else {}
        response = await client.http.post(
            URL, json=chat_body(model_of(provider), "weather?", tools=tools, **extra)
        )
        assert response.status_code == 200, response.text
        if streamed:
            calls: dict[int, dict] = {}
            finish = None
            for block in response.text.split("\n\n"):
                data = block.removeprefix("data: ")
                if not data.strip() or data == "[DONE]":
                    continue
                choice = json.loads(data)["choices"][0]
                finish = choice["finish_reason"] or finish
                for piece in choice["delta"].get("tool_calls") or ():
                    call = calls.setdefault(piece["index"], {"id": None, "name": "", "args": ""})
                    call["id"] = piece.get("id") or call["id"]
                    call["name"] += piece["function"].get("name") or ""
                    call["args"] += piece["function"].get("arguments") or ""
            got = [(c["id"], c["name"], json.loads(c["args"])) for _, c in sorted(calls.items())]
        else:
            choice = response.json()["choices"][0]
            finish = choice["finish_reason"]
            got = [
                (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
                for c in choice["message"]["tool_calls"]
            ]
            assert all(c["type"] == "function" for c in choice["message"]["tool_calls"])
        assert finish == "tool_calls"
        assert [(name, args) for _, name, args in got] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"zone": "Europe/Paris"}),
        ]
        ids = [call_id for call_id, _, _ in got]
        assert all(ids) and len(set(ids)) == 2


def test_the_stand_in_covers_every_finish_reason_table():
    # A new SDK value appears in provider_wire first: the adapters' tables must follow it.
    from techno_os_api.llm.providers.anthropic import STOP_REASONS
    from techno_os_api.llm.providers.google import FINISH_REASONS

    assert set(STOP_REASONS) == set(wire.ANTHROPIC_STOP_REASONS)
    assert set(FINISH_REASONS) == set(wire.GEMINI_FINISH_REASONS)
    assert Behaviour().finish_reason is None
