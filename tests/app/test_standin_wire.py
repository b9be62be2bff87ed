"""Self-test of the provider stand-ins: what files/standin/provider_wire.py renders is checked
against the providers' official SDK types (openai, anthropic, google-genai), and the SDK
clients themselves are run against both stand-ins over loopback HTTP, so a generator that
produces a wrong shape, a wrong event order or wrong framing fails here.

The SDKs' models accept unknown fields (OpenAI, Anthropic) or coerce types; `strict()` makes the
check strict: JSON-mode strict validation (no "13" for 13) and no field the SDK does not know,
except the few the document lists as a provider's own (DeepSeek's cache counters, xAI's
num_sources_used, their reasoning_content).
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import typing
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse as AnthropicErrorResponse
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.shared import ErrorObject as OpenAIErrorObject
from standin import Behaviour, StandIn, ToolCall, wire

REPO = Path(__file__).resolve().parents[2]
DIALECT_FIELDS = {
    "openai": frozenset(),
    "xai": frozenset({"num_sources_used", "reasoning_content"}),
    "deepseek": frozenset(
        {"prompt_cache_hit_tokens", "prompt_cache_miss_tokens", "reasoning_content"}
    ),
}
RICH = wire.Answer(
    text=("Hello", ", ", "world"),
    thinking="first I think, then I answer",
    tool_calls=(
        wire.ToolCall("get_weather", {"city": "Paris", "unit": "celsius"}),
        wire.ToolCall("get_time", {"tz": "Europe/Paris"}, id="call_given"),
    ),
    usage=wire.Usage(
        input_tokens=120,
        output_tokens=60,
        cache_read_tokens=40,
        cache_write_tokens=20,
        reasoning_tokens=25,
    ),
    model="m-1",
)
ANSWERS = {
    "text": wire.Answer(),
    "rich": RICH,
    "tools only": wire.Answer(text="", tool_calls=RICH.tool_calls),
    "refusal": wire.Answer(text="", refusal="I can't help with that."),
}


# --- strict validation ----------------------------------------------------------------------------
def unknown_fields(model: Any, allowed: frozenset[str] = frozenset(), at: str = "") -> list[str]:
    """Field names a pydantic model tree received but does not declare."""
    found: list[str] = []
    if isinstance(model, pydantic.BaseModel):
        found += [f"{at}.{k}" for k in (model.model_extra or {}) if k not in allowed]
        for name in type(model).model_fields:
            found += unknown_fields(getattr(model, name), allowed, f"{at}.{name}")
    elif isinstance(model, list | tuple):
        for i, item in enumerate(model):
            found += unknown_fields(item, allowed, f"{at}[{i}]")
    return found


def strict(model_type: Any, data: Any, allowed: frozenset[str] = frozenset()) -> Any:
    adapter = pydantic.TypeAdapter(model_type)
    model = adapter.validate_json(json.dumps(data), strict=True)
    assert unknown_fields(model, allowed) == [], f"fields the SDK does not know: {data}"
    return model


def data_events(frames: list[bytes]) -> list[wire.SSEEvent]:
    return wire.parse_sse(b"".join(frames))


# --- enums: the module's lists are the SDKs' current ones -----------------------------------------
def test_finish_reason_lists_match_the_sdks() -> None:
    openai_reasons = typing.get_args(ChatCompletion.model_fields["choices"].annotation)[0]
    literal = openai_reasons.model_fields["finish_reason"].annotation
    assert set(typing.get_args(literal)) == set(wire.OPENAI_FINISH_REASONS)
    assert set(typing.get_args(anthropic.types.StopReason)) == set(wire.ANTHROPIC_STOP_REASONS)
    assert {r.value for r in gtypes.FinishReason} == set(wire.GEMINI_FINISH_REASONS)
    assert {r.value for r in gtypes.BlockedReason} == set(wire.GEMINI_BLOCK_REASONS)


def test_the_proposed_mapping_covers_every_value() -> None:
    mapping = wire.PROPOSED_OPENAI_FINISH_REASON
    assert set(mapping[wire.ANTHROPIC]) == set(wire.ANTHROPIC_STOP_REASONS)
    assert set(mapping[wire.GEMINI]) == set(wire.GEMINI_FINISH_REASONS)
    assert set(mapping[wire.OPENAI]) == set(wire.OPENAI_FINISH_REASONS) | set(
        wire.DEEPSEEK_FINISH_REASONS
    )
    for table in mapping.values():
        assert set(table.values()) <= set(wire.OPENAI_FINISH_REASONS) | {None}


# --- OpenAI chat completions ----------------------------------------------------------------------
@pytest.mark.parametrize("dialect", wire.DIALECTS)
@pytest.mark.parametrize("name", ANSWERS)
def test_openai_completion_is_a_chat_completion(dialect: str, name: str) -> None:
    answer = ANSWERS[name]
    body = wire.openai_completion(answer, dialect)
    completion = strict(ChatCompletion, body, DIALECT_FIELDS[dialect])
    message = completion.choices[0].message
    if answer.refusal is not None:
        assert message.content is None and message.refusal == answer.refusal
    elif answer.tool_calls and not answer.full_text:
        assert message.content is None
    else:
        assert message.content == answer.full_text
    calls = message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (c.name, c.arguments) for c in answer.tool_calls
    ]
    assert completion.choices[0].finish_reason == ("tool_calls" if calls else "stop")
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == answer.usage.input_tokens
    assert usage.total_tokens == answer.usage.total_tokens
    reasoning = answer.usage.reasoning_tokens
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == reasoning
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == answer.usage.cache_read_tokens
    if dialect == "xai":  # xAI counts reasoning apart from completion_tokens
        assert usage.completion_tokens == answer.usage.output_tokens - reasoning
    else:
        assert usage.completion_tokens == answer.usage.output_tokens
    if dialect == "deepseek":
        assert body["usage"]["prompt_cache_hit_tokens"] == answer.usage.cache_read_tokens
        assert body["usage"]["prompt_cache_miss_tokens"] == (
            answer.usage.input_tokens - answer.usage.cache_read_tokens
        )
    if dialect != "openai" and answer.thinking_pieces:
        assert body["choices"][0]["message"]["reasoning_content"] == answer.full_thinking


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("dialect", wire.DIALECTS)
@pytest.mark.parametrize("name", ANSWERS)
def test_openai_stream_is_chunks_then_done(dialect: str, name: str, include_usage: bool) -> None:
    answer = ANSWERS[name]
    frames = wire.openai_sse(answer, dialect, include_usage=include_usage, obfuscation=True)
    events = data_events(frames)
    assert events[-1].data == "[DONE]" and all(e.event is None for e in events)
    chunks = [strict(ChatCompletionChunk, e.json(), DIALECT_FIELDS[dialect]) for e in events[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    if include_usage:
        *chunks, last = chunks
        assert last.choices == [] and last.usage is not None
        assert last.usage.total_tokens == answer.usage.total_tokens
        assert all(c.usage is None and "usage" in c.model_fields_set for c in chunks)
    else:
        assert all("usage" not in c.model_fields_set for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks]
    assert finishes[:-1] == [None] * (len(chunks) - 1)
    assert finishes[-1] == ("tool_calls" if answer.tool_calls else "stop")
    deltas = [c.choices[0].delta for c in chunks]
    assert "".join(d.content or "" for d in deltas) == answer.full_text
    if answer.refusal is not None:
        assert "".join(d.refusal or "" for d in deltas) == answer.refusal
    arguments: dict[int, str] = {}
    names: dict[int, str] = {}
    for delta in deltas:
        for call in delta.tool_calls or []:
            assert call.function is not None
            if call.id is not None:  # the first fragment of a call: id, type and name
                assert call.type == "function" and call.function.name
                names[call.index] = call.function.name
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
    assert [(names[i], json.loads(arguments[i])) for i in sorted(names)] == [
        (c.name, c.arguments) for c in answer.tool_calls
    ]
    if dialect != "openai":
        reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
        assert reasoning == answer.full_thinking


@pytest.mark.parametrize("reason", wire.DEEPSEEK_FINISH_REASONS + wire.OPENAI_FINISH_REASONS)
def test_every_openai_format_finish_reason_renders(reason: str) -> None:
    body = wire.openai_completion(wire.Answer(finish_reason=reason), "deepseek")
    chunks = wire.openai_chunks(wire.Answer(finish_reason=reason), "deepseek")
    assert body["choices"][0]["finish_reason"] == chunks[-1]["choices"][0]["finish_reason"]
    if reason in wire.OPENAI_FINISH_REASONS:
        strict(ChatCompletion, body, DIALECT_FIELDS["deepseek"])
    else:  # DeepSeek's own value: the OpenAI SDK refuses it, so the gateway must map it
        with pytest.raises(pydantic.ValidationError):
            strict(ChatCompletion, body, DIALECT_FIELDS["deepseek"])


# --- Anthropic Messages ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ANSWERS)
def test_anthropic_message_is_a_message(name: str) -> None:
    answer = ANSWERS[name]
    message = strict(Message, wire.anthropic_message(answer))
    kinds = [block.type for block in message.content]
    assert kinds == (
        (["thinking"] if answer.thinking_pieces else [])
        + (["text"] if answer.full_text or not answer.tool_calls else [])
        + ["tool_use"] * len(answer.tool_calls)
    )
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [(b.name, b.input) for b in uses] == [(c.name, c.arguments) for c in answer.tool_calls]
    expected = "refusal" if answer.refusal else "tool_use" if answer.tool_calls else "end_turn"
    assert message.stop_reason == expected
    if answer.refusal:
        assert message.stop_details is not None
        assert message.stop_details.explanation == answer.refusal
    u = answer.usage
    assert message.usage.input_tokens == u.input_tokens - u.cache_read_tokens - u.cache_write_tokens
    assert message.usage.cache_read_input_tokens == u.cache_read_tokens
    assert message.usage.cache_creation_input_tokens == u.cache_write_tokens
    assert message.usage.output_tokens == u.output_tokens


@pytest.mark.parametrize("name", ANSWERS)
def test_anthropic_stream_events_follow_the_documented_flow(name: str) -> None:
    answer = ANSWERS[name]
    events = data_events(wire.anthropic_sse(answer))
    assert all(e.event == e.json()["type"] for e in events)  # `event:` names the data's type
    names = [e.event for e in events if e.event != "ping"]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    parsed = [
        strict(RawMessageStreamEvent, e.json()) for e in events if e.event not in ("ping", "error")
    ]
    start = parsed[0]
    assert start.message.content == [] and start.message.stop_reason is None
    open_block: int | None = None
    text, thinking, signature, partial = "", "", "", {}
    for event in parsed[1:-2]:
        if event.type == "content_block_start":
            assert open_block is None
            open_block = event.index
        elif event.type == "content_block_delta":
            assert event.index == open_block
            delta = event.delta
            if delta.type == "text_delta":
                text += delta.text
            elif delta.type == "thinking_delta":
                assert not signature  # the signature comes last, just before the stop
                thinking += delta.thinking
            elif delta.type == "signature_delta":
                signature = delta.signature
            elif delta.type == "input_json_delta":
                partial[event.index] = partial.get(event.index, "") + delta.partial_json
        else:
            assert event.type == "content_block_stop" and event.index == open_block
            open_block = None
    assert open_block is None
    assert text == answer.full_text and thinking == answer.full_thinking
    assert bool(signature) == bool(answer.thinking_pieces)
    assert [json.loads(p) for _, p in sorted(partial.items())] == [
        c.arguments for c in answer.tool_calls
    ]
    delta_event = parsed[-2]
    assert delta_event.delta.stop_reason == wire.anthropic_message(answer)["stop_reason"]
    assert delta_event.usage.output_tokens == answer.usage.output_tokens  # cumulative


@pytest.mark.parametrize("reason", wire.ANTHROPIC_STOP_REASONS)
def test_every_anthropic_stop_reason_renders(reason: str) -> None:
    answer = wire.Answer(finish_reason=reason, refusal="no" if reason == "refusal" else None)
    message = strict(Message, wire.anthropic_message(answer))
    assert message.stop_reason == reason
    assert (message.stop_sequence is not None) == (reason == "stop_sequence")
    last_delta = data_events(wire.anthropic_sse(answer))[-2].json()
    assert strict(RawMessageStreamEvent, last_delta).delta.stop_reason == reason


# --- Gemini ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ANSWERS)
def test_gemini_response_is_a_generate_content_response(name: str) -> None:
    answer = ANSWERS[name]
    response = strict(gtypes.GenerateContentResponse, wire.gemini_response(answer))
    candidate = response.candidates[0]
    parts = candidate.content.parts if candidate.content else []
    assert "".join(p.text for p in parts if p.text and not p.thought) == answer.full_text
    assert "".join(p.text for p in parts if p.text and p.thought) == answer.full_thinking
    calls = [p.function_call for p in parts if p.function_call]
    assert [(c.name, c.args) for c in calls] == [(c.name, c.arguments) for c in answer.tool_calls]
    assert candidate.finish_reason == ("SAFETY" if answer.refusal else "STOP")
    usage = response.usage_metadata
    u = answer.usage
    assert usage.prompt_token_count == u.input_tokens
    assert (usage.cached_content_token_count or 0) == u.cache_read_tokens
    assert (usage.thoughts_token_count or 0) == u.reasoning_tokens
    assert usage.candidates_token_count == u.output_tokens - u.reasoning_tokens
    assert usage.total_token_count == u.total_tokens


@pytest.mark.parametrize("name", ANSWERS)
def test_gemini_stream_chunks_and_their_usage(name: str) -> None:
    answer = ANSWERS[name]
    frames = wire.gemini_sse(answer)
    assert all(f.endswith(b"\r\n\r\n") and f.startswith(b"data: ") for f in frames)
    chunks = [strict(gtypes.GenerateContentResponse, e.json()) for e in data_events(frames)]
    assert [c.candidates[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].candidates[0].finish_reason is not None
    text = "".join(
        p.text or "" for c in chunks for p in c.candidates[0].content.parts if not p.thought
    )
    assert text == answer.full_text
    assert all(c.usage_metadata.candidates_token_count is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata.total_token_count == answer.usage.total_tokens
    array = json.loads(b"".join(wire.gemini_json_array(answer)))
    assert array == [e.json() for e in data_events(frames)]


@pytest.mark.parametrize("reason", wire.GEMINI_FINISH_REASONS)
def test_every_gemini_finish_reason_renders(reason: str) -> None:
    answer = wire.Answer(finish_reason=reason)
    response = strict(gtypes.GenerateContentResponse, wire.gemini_response(answer))
    assert response.candidates[0].finish_reason == gtypes.FinishReason(reason)
    last = strict(gtypes.GenerateContentResponse, wire.gemini_chunks(answer)[-1])
    assert last.candidates[0].finish_reason == gtypes.FinishReason(reason)


@pytest.mark.parametrize("reason", wire.GEMINI_BLOCK_REASONS)
def test_gemini_blocked_prompt_has_no_candidates(reason: str) -> None:
    answer = wire.Answer(blocked=reason)
    for body in (wire.gemini_response(answer), *wire.gemini_chunks(answer)):
        response = strict(gtypes.GenerateContentResponse, body)
        assert response.candidates is None
        assert response.prompt_feedback.block_reason == gtypes.BlockedReason(reason)


# --- errors ---------------------------------------------------------------------------------------
STATUSES = (400, 401, 402, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504, 529)


@pytest.mark.parametrize("status", STATUSES)
def test_error_bodies_have_each_providers_shape(status: int) -> None:
    body = wire.error_body(wire.OPENAI, status, "boom")
    error = strict(OpenAIErrorObject, body["error"])
    assert error.message == "boom" and error.type
    assert wire.error_body(wire.OPENAI, status, "boom", dialect="xai")["error"] == "boom"
    anthropic_body = wire.error_body(wire.ANTHROPIC, status, "boom")
    if anthropic_body["error"]["type"] == "request_too_large":  # documented; not in the SDK
        assert status == 413
    else:
        parsed = strict(AnthropicErrorResponse, anthropic_body)
        assert parsed.error.message == "boom" and parsed.type == "error"
    gemini_body = wire.error_body(wire.GEMINI, status, "boom", retry_after=3)
    error = genai_errors.APIError(status, gemini_body)
    assert (error.code, error.message) == (status, "boom")
    assert error.status == wire.GEMINI_STATUSES.get(status, error.status)
    assert gemini_body["error"]["details"][0]["retryDelay"] == "3s"


def test_stream_error_frames() -> None:
    [event] = wire.parse_sse(wire.stream_error_frame(wire.ANTHROPIC))
    assert event.event == "error"
    assert event.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    [event] = wire.parse_sse(wire.stream_error_frame(wire.OPENAI, 500, "bad"))
    assert event.event is None and strict(OpenAIErrorObject, event.json()["error"]).message == "bad"
    [event] = wire.parse_sse(wire.stream_error_frame(wire.GEMINI, 503, "later"))
    assert event.json()["error"] == {"code": 503, "message": "later", "status": "UNAVAILABLE"}


# --- SSE parsing and HTTP helpers -----------------------------------------------------------------
def test_parse_sse_follows_the_whatwg_rules() -> None:
    raw = b": comment\r\nevent: a\r\ndata: 1\r\ndata:2\r\n\r\n"
    raw += b"id: 5\ndata: x\n\nevent: lonely\n\ndata: y"
    assert wire.parse_sse(raw) == [
        wire.SSEEvent("a", "1\n2"),
        wire.SSEEvent(None, "x"),
        wire.SSEEvent(None, "y"),
    ]


def test_gzip_bomb_inflates_to_the_size_asked() -> None:
    size = 24 * (1 << 20) + 7
    bomb = wire.gzip_bomb(size, prefix=b'{"a": [', suffix=b"]}")
    assert len(bomb) < size // 500
    inflater = zlib.decompressobj(31)
    total, head, tail = 0, b"", b""
    for i in range(0, len(bomb), 4096):
        out = inflater.decompress(bomb[i : i + 4096])
        head = head or out[:16]
        tail = (tail + out)[-16:]
        total += len(out)
    assert inflater.eof and total == size
    assert head.startswith(b'{"a": [') and tail.endswith(b"]}")


def test_pieces_keep_every_character() -> None:
    for text in ("stand-in reply", " lead and trail ", "", "a\n\nb"):
        assert "".join(wire.pieces(text)) == text
    assert wire.pieces(("a", "b")) == ["a", "b"]


# --- the SDK clients against the app tests' stand-in ----------------------------------------------
def openai_client(standin: StandIn) -> openai.OpenAI:
    return openai.OpenAI(base_url=standin.url, api_key="sk-test", max_retries=0)


def anthropic_client(standin: StandIn) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=standin.url, api_key="sk-ant-test", max_retries=0)


def gemini_client(standin: StandIn) -> genai.Client:
    options = gtypes.HttpOptions(base_url=standin.url, api_version="v1beta")
    return genai.Client(api_key="g-test", http_options=options)


HELLO = [{"role": "user", "content": "hi"}]
TOOLS = (ToolCall("get_weather", {"city": "Paris"}),)


def test_openai_sdk_streams_from_the_standin(standin: StandIn) -> None:
    standin.behave(text=("Hel", "lo"), tool_calls=TOOLS, prompt_tokens=30, cached_tokens=10)
    stream = openai_client(standin).chat.completions.create(
        model="gpt-x", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 30
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[0].model == "gpt-x" and chunks[0].obfuscation
    exchange = standin.exchange()
    assert exchange.wait_ended() and exchange.streamed and exchange.finished_at is not None
    assert exchange.frames_sent == len(chunks) + 1  # and [DONE]
    with openai_client(standin).chat.completions.stream(model="gpt-x", messages=HELLO) as helper:
        final = helper.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_anthropic_sdk_accumulates_the_standin_stream(standin: StandIn) -> None:
    standin.behave(
        text="the answer",
        thinking="let me think",
        tool_calls=TOOLS,
        prompt_tokens=50,
        cached_tokens=20,
        cache_write_tokens=10,
        completion_tokens=30,
        reasoning_tokens=12,
    )
    with anthropic_client(standin).messages.stream(
        model="claude-x", max_tokens=100, messages=HELLO
    ) as stream:
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].signature and message.content[1].text == "the answer"
    assert message.content[2].input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (20, 20)
    assert message.usage.output_tokens == 30
    assert standin.received[0].path == "/v1/messages"


def test_anthropic_sdk_sees_the_in_stream_overloaded_error(standin: StandIn) -> None:
    standin.behave(fail_after=3, fail_mode="error")
    client = anthropic_client(standin)
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="claude-x", max_tokens=100, messages=HELLO) as stream,
    ):
        stream.get_final_message()
    assert "overloaded_error" in str(caught.value)
    exchange = standin.exchange()
    assert exchange.wait_ended() and exchange.failed_at and exchange.frames_sent == 4


def test_gemini_sdk_streams_from_the_standin(standin: StandIn) -> None:
    standin.behave(text=("a ", "b ", "c"), thinking="hmm", reasoning_tokens=4)
    client = gemini_client(standin)  # keep a reference: a collected Client closes its HTTP client
    chunks = list(client.models.generate_content_stream(model="gemini-x", contents="hi"))
    assert "".join(c.text or "" for c in chunks) == "a b c"
    assert chunks[-1].usage_metadata.thoughts_token_count == 4
    sent = standin.received[0]
    assert sent.path == "/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
    assert sent.headers["x-goog-api-key"] == "g-test"
    whole = client.models.generate_content(model="gemini-x", contents="hi")
    assert whole.text == "a b c"


def test_gemini_sdk_sees_a_blocked_prompt(standin: StandIn) -> None:
    standin.behave(blocked="PROHIBITED_CONTENT")
    client = gemini_client(standin)
    response = client.models.generate_content(model="gemini-x", contents="hi")
    assert response.candidates is None
    assert response.prompt_feedback.block_reason == gtypes.BlockedReason.PROHIBITED_CONTENT


def test_sdks_see_provider_errors_and_retry_hints(standin: StandIn) -> None:
    standin.behave(status=429, retry_after=7, error_message="slow down")
    with pytest.raises(openai.RateLimitError) as rate:
        openai_client(standin).chat.completions.create(model="gpt-x", messages=HELLO)
    assert rate.value.response.headers["retry-after"] == "7"
    assert rate.value.message.endswith("slow down")
    standin.behave(status=529)
    with pytest.raises(anthropic.OverloadedError):
        anthropic_client(standin).messages.create(model="c", max_tokens=5, messages=HELLO)
    standin.behave(status=429, retry_after=2)
    client = gemini_client(standin)
    with pytest.raises(genai_errors.ClientError) as gemini:
        client.models.generate_content(model="gemini-x", contents="hi")
    assert (gemini.value.code, gemini.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert gemini.value.details["error"]["details"][0]["retryDelay"] == "2s"


# --- the stand-in's transport behaviours ----------------------------------------------------------
def post(standin: StandIn, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(standin.url + path, json=body, **kwargs)


def test_delays_shape_the_stream(standin: StandIn) -> None:
    standin.behave(text=("a", "b", "c"), first_chunk_delay=0.3, chunk_delay=0.1)
    started = time.monotonic()
    with httpx.stream("POST", standin.url + "/chat/completions", json={"stream": True}) as r:
        arrivals = []
        for _ in r.iter_raw():
            arrivals.append(time.monotonic() - started)
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["transfer-encoding"] == "chunked"
    assert 0.3 <= arrivals[0] < 0.6
    assert arrivals[-1] >= 0.3 + 0.1 * 5  # role, a, b, c, finish, [DONE]
    exchange = standin.exchange()
    assert exchange.first_frame_at - exchange.started_at >= 0.3


@pytest.mark.parametrize("mode", ["drop", "reset"])
def test_a_stream_broken_after_n_frames(standin: StandIn, mode: str) -> None:
    standin.behave(fail_after=2, fail_mode=mode)
    received = b""
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        httpx.stream("POST", standin.url + "/chat/completions", json={"stream": True}) as r,
    ):
        for data in r.iter_raw():
            received += data
    assert len(wire.parse_sse(received)) <= 2
    exchange = standin.exchange()
    assert exchange.wait_ended() and exchange.frames_sent == 2 and exchange.failed_at
    assert exchange.finished_at is None


def test_the_standin_sees_a_client_leave_mid_stream(standin: StandIn) -> None:
    standin.behave(text=tuple("abcdefgh"), chunk_delay=0.5)
    with httpx.stream("POST", standin.url + "/chat/completions", json={"stream": True}) as r:
        next(r.iter_raw())
        left = time.monotonic()
    exchange = standin.exchange()
    closed = exchange.wait_closed(2.0)
    assert closed is not None and closed - left < 0.2
    assert exchange.frames_sent < 5 and exchange.finished_at is None
    assert closed - exchange.last_frame_at < 0.5  # noticed while waiting for the next chunk


def test_the_standin_sees_a_client_time_out_on_a_hang(standin: StandIn) -> None:
    standin.behave(delay=30)
    with pytest.raises(httpx.ReadTimeout):
        post(standin, "/chat/completions", {}, timeout=0.2)
    left = time.monotonic()
    closed = standin.exchange().wait_closed(2.0)
    assert closed is not None and closed - left < 0.2
    standin.behave(fail_after=1, fail_mode="hang")  # an idle stream: nothing after one frame
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream(
            "POST", standin.url + "/chat/completions", json={"stream": True}, timeout=0.3
        ) as r,
    ):
        for _ in r.iter_raw():
            pass
    assert standin.exchange().wait_closed(2.0) is not None
    assert standin.exchange().frames_sent == 1


def test_keepalives_while_waiting_are_not_frames(standin: StandIn) -> None:
    standin.behave(text="x", first_chunk_delay=0.35, keepalive_interval=0.1, dialect="deepseek")
    response = post(standin, "/chat/completions", {"stream": True})
    assert response.text.count(": keep-alive") >= 3
    assert [e.data for e in wire.parse_sse(response.content)][-1] == "[DONE]"
    assert standin.exchange().frames_sent == 4
    standin.behave(first_chunk_delay=0.25, keepalive_interval=0.1)
    response = post(standin, "/v1/messages", {"stream": True})
    assert response.text.count("event: ping") >= 3


def test_gzip_streams_and_bodies(standin: StandIn) -> None:
    standin.behave(gzip=True)
    response = post(standin, "/chat/completions", {"stream": True})
    assert response.headers["content-encoding"] == "gzip"
    assert wire.parse_sse(response.content)[-1].data == "[DONE]"
    response = post(standin, "/v1/messages", {})
    assert response.json()["content"][0]["text"] == "stand-in reply"


def test_a_gzip_bomb_is_small_on_the_wire(standin: StandIn) -> None:
    standin.script(Behaviour.gzip_bomb(16 << 20))
    with httpx.stream("POST", standin.url + "/chat/completions", json={}) as r:
        on_wire = sum(len(d) for d in r.iter_raw())
    assert r.headers["content-encoding"] == "gzip" and on_wire < (16 << 20) // 500
    standin.script(Behaviour.gzip_bomb(16 << 20))
    assert len(post(standin, "/chat/completions", {}).json()["choices"]) == 0


def test_huge_raw_and_mutated_answers(standin: StandIn) -> None:
    standin.script(Behaviour.huge(3 << 20), Behaviour.huge(3 << 20, piece=1 << 20))
    assert len(post(standin, "/chat/completions", {}).content) > 3 << 20
    streamed = post(standin, "/v1/messages", {"stream": True})
    deltas = [e for e in wire.parse_sse(streamed.content) if e.event == "content_block_delta"]
    assert [len(e.json()["delta"]["text"]) for e in deltas] == [1 << 20] * 3
    standin.behave(raw=b"\x00not json", content_type="text/plain", status=502)
    response = post(standin, "/chat/completions", {})
    assert (response.status_code, response.content) == (502, b"\x00not json")
    standin.behave(mutate=lambda body: body | {"usage": {"prompt_tokens": "7"}})
    assert post(standin, "/chat/completions", {}).json()["usage"] == {"prompt_tokens": "7"}


def test_error_bodies_by_path_and_echoed_headers(standin: StandIn) -> None:
    standin.behave(status=401, echo_headers=True)
    secret = {"Authorization": "Bearer sk-secret", "x-api-key": "ant-secret"}
    openai_error = post(standin, "/chat/completions", {}, headers=secret).json()
    assert "sk-secret" in openai_error["error"]["message"]
    assert openai_error["request_headers"]["authorization"] == "Bearer sk-secret"
    assert post(standin, "/v1/messages", {}).json()["error"]["type"] == "authentication_error"
    gemini_error = post(standin, "/v1beta/models/g:generateContent", {}).json()["error"]
    assert gemini_error["status"] == "UNAUTHENTICATED"
    standin.behave(status=400, dialect="xai")
    assert set(post(standin, "/chat/completions", {}).json()) == {"code", "error"}


def test_gemini_stream_without_alt_sse_is_a_json_array(standin: StandIn) -> None:
    response = post(standin, "/v1beta/models/g:streamGenerateContent", {})
    assert response.headers["content-type"] == "application/json"
    chunks = response.json()
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == (
        "stand-in reply"
    )


def test_get_lists_models_and_keep_alive_reuses_the_connection(standin: StandIn) -> None:
    with httpx.Client(base_url=standin.url) as client:
        assert client.get("/models").json()["object"] == "list"
        assert "models" in client.get("/v1beta/models").json()
        listed = client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
        assert listed.json()["data"][0]["type"] == "model"
        assert client.post("/chat/completions", json={"stream": True}).status_code == 200
        assert client.post("/chat/completions", json={}).status_code == 200
    assert [r.method for r in standin.received] == ["GET"] * 3 + ["POST"] * 2


def test_exact_frames_and_script_order(standin: StandIn) -> None:
    standin.script(Behaviour(frames=(b"data: {}\n\n", b"data: [DONE]\n\n")), Behaviour(status=503))
    assert post(standin, "/chat/completions", {"stream": True}).content == (
        b"data: {}\n\ndata: [DONE]\n\n"
    )
    assert post(standin, "/chat/completions", {}).status_code == 503
    assert post(standin, "/chat/completions", {}).status_code == 200


def test_behaviour_refuses_inconsistent_settings() -> None:
    with pytest.raises(ValueError):
        Behaviour(prompt_tokens=5, cached_tokens=6)
    with pytest.raises(ValueError):
        Behaviour(fail_mode="explode")
    with pytest.raises(ValueError):
        Behaviour(dialect="mistral")


# --- the sandbox drills' stand-in (files/standin/llm_standin.py) ----------------------------------
def _load_llm_standin() -> Any:
    path = REPO / "files" / "standin" / "llm_standin.py"
    spec = importlib.util.spec_from_file_location("llm_standin_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def drill_standin() -> Iterator[str]:
    server = _load_llm_standin().make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


AUTH = {"Authorization": "Bearer sk-drill"}


def control(base: str, **body: Any) -> dict[str, Any]:
    return httpx.post(base + "/_control", json=body).json()


def test_drill_standin_streams_each_format(drill_standin: str) -> None:
    control(drill_standin, mode="ok", reset=True)
    client = openai.OpenAI(base_url=drill_standin + "/v1", api_key="sk-drill", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "stand-in reply"
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 1
    for event in data_events(
        [
            httpx.post(
                drill_standin + "/v1/messages",
                json={"model": "c", "stream": True, "messages": HELLO},
                headers={"x-api-key": "k"},
            ).content
        ]
    ):
        if event.event not in ("ping", "error"):
            strict(RawMessageStreamEvent, event.json())
    gemini = httpx.post(
        drill_standin + "/v1beta/models/g:streamGenerateContent?alt=sse",
        json={"contents": [{"parts": [{"text": "hi"}]}]},
        headers={"x-goog-api-key": "k"},
    )
    for event in wire.parse_sse(gemini.content):
        strict(gtypes.GenerateContentResponse, event.json())
    assert control(drill_standin)["requests"] == 3


def test_drill_standin_fails_mid_stream_and_counts_disconnects(drill_standin: str) -> None:
    state = control(drill_standin, mode="ok", reset=True, stream_fail_after=2)
    assert state["stream_fail_after"] == 2
    with pytest.raises(openai.APIConnectionError):
        client = openai.OpenAI(base_url=drill_standin + "/v1", api_key="k", max_retries=0)
        list(client.chat.completions.create(model="m", messages=HELLO, stream=True))
    control(drill_standin, stream_fail_after=None, chunk_delay=0.4)
    with httpx.stream(
        "POST", drill_standin + "/v1/chat/completions", json={"stream": True}, headers=AUTH
    ) as r:
        next(r.iter_raw())
    deadline = time.monotonic() + 2
    while (state := httpx.get(drill_standin + "/_control").json()).get("disconnects", 0) < 1:
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    last = state["last_disconnect"]
    assert last["chunks_sent"] >= 1 and 0 <= last["seconds_after_last_chunk"] < 0.5
    full = httpx.get(drill_standin + "/_control?all=1").json()
    assert full["chunk_delay"] == 0.4 and full["disconnects"] == 1
    compact = control(drill_standin, reset=True, chunk_delay=0)
    assert compact == {"mode": "ok", "hang_seconds": 60.0, "requests": 0}
