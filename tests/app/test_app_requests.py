# ruff: noqa: E501  (the case tables read best one case a line)
"""What goes out: every OpenAI chat parameter is forwarded faithfully to each provider, mapped
to its equivalent, or refused with a 400 naming the parameter and the provider, never dropped.
Tool calling round trips, images and JSON output per provider."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from app_helpers import chat_body
from standin import ToolCall

URL = "/v1/chat/completions"
ALL = "fake,openai,anthropic,google,xai,deepseek"
KEYS = {f"{p}_api_key": f"key-{p}" for p in ("openai", "anthropic", "google", "xai", "deepseek")}
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
SCHEMA = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def model_of(provider: str) -> str:
    return f"{provider}/gemini-2.0-flash" if provider == "google" else f"{provider}/some-model"


def image(url: str = PNG, detail: str | None = None) -> list[dict[str, Any]]:
    image_url: dict[str, Any] = {"url": url}
    if detail:
        image_url["detail"] = detail
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is it?"},
                {"type": "image_url", "image_url": image_url},
            ],
        }
    ]


Check = Callable[[dict[str, Any]], object]

# (provider, request fields, what the provider must receive)
MAPPED: list[tuple[str, dict[str, Any], Check]] = [
    ("openai", {"max_completion_tokens": 64}, lambda b: b["max_completion_tokens"] == 64 and "max_tokens" not in b),
    ("openai", {"max_tokens": 64}, lambda b: b["max_tokens"] == 64),
    ("openai", {"stop": ["x"], "top_p": 0.5, "seed": 7}, lambda b: (b["stop"], b["top_p"], b["seed"]) == (["x"], 0.5, 7)),
    ("openai", {"presence_penalty": 0.5, "frequency_penalty": -0.5, "user": "u1"},
     lambda b: (b["presence_penalty"], b["frequency_penalty"], b["user"]) == (0.5, -0.5, "u1")),
    ("openai", {"response_format": {"type": "json_object"}}, lambda b: b["response_format"] == {"type": "json_object"}),
    ("openai", {"response_format": SCHEMA}, lambda b: b["response_format"] == SCHEMA),
    ("openai", {"reasoning_effort": "low", "n": 1}, lambda b: b["reasoning_effort"] == "low"),
    ("openai", {"messages": [{"role": "user", "content": "hi", "name": "ann"}]}, lambda b: b["messages"][0]["name"] == "ann"),
    ("openai", {"messages": image(detail="high")}, lambda b: b["messages"][0]["content"][1]["image_url"] == {"url": PNG, "detail": "high"}),
    ("openai", {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
     lambda b: (b["tools"], b["tool_choice"], b["parallel_tool_calls"]) == (TOOLS, "required", False)),
    ("xai", {"max_completion_tokens": 64, "seed": 3}, lambda b: (b["max_tokens"], b["seed"]) == (64, 3) and "max_completion_tokens" not in b),
    ("xai", {"messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}]},
     lambda b: b["messages"][0] == {"role": "system", "content": "d"}),
    ("deepseek", {"response_format": {"type": "json_object"}, "stop": "END"},
     lambda b: (b["response_format"], b["stop"]) == ({"type": "json_object"}, "END")),
    ("anthropic", {"max_completion_tokens": 64, "stop": "END", "top_p": 0.9, "temperature": 0.3},
     lambda b: (b["max_tokens"], b["stop_sequences"], b["top_p"], b["temperature"]) == (64, ["END"], 0.9, 0.3)),
    ("anthropic", {"user": "u1"}, lambda b: b["metadata"] == {"user_id": "u1"}),
    ("anthropic", {"response_format": SCHEMA}, lambda b: b["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}),
    ("anthropic", {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
     lambda b: b["tools"][0] == {"name": "get_weather", "description": "weather of a city", "input_schema": TOOLS[0]["function"]["parameters"]}
     and b["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}),
    ("anthropic", {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     lambda b: b["tool_choice"] == {"type": "tool", "name": "get_weather"}),
    ("anthropic", {"tools": TOOLS, "tool_choice": "none"}, lambda b: b["tool_choice"] == {"type": "none"}),
    ("anthropic", {"messages": image()}, lambda b: b["messages"][0]["content"] == [
        {"type": "text", "text": "what is it?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",")[1]}},
    ]),
    ("anthropic", {"messages": image("https://example.com/cat.jpg")},
     lambda b: b["messages"][0]["content"][1] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}),
    ("anthropic", {"messages": [{"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                                {"role": "user", "content": "u"}]},
     lambda b: b["system"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
    ("google", {"max_completion_tokens": 64, "stop": ["END"], "seed": 5, "top_p": 0.9},
     lambda b: b["generationConfig"] == {"maxOutputTokens": 64, "stopSequences": ["END"], "seed": 5, "topP": 0.9}),
    ("google", {"presence_penalty": 1, "frequency_penalty": -1},
     lambda b: (b["generationConfig"]["presencePenalty"], b["generationConfig"]["frequencyPenalty"]) == (1, -1)),
    ("google", {"response_format": {"type": "json_object"}}, lambda b: b["generationConfig"] == {"responseMimeType": "application/json"}),
    ("google", {"response_format": SCHEMA},
     lambda b: b["generationConfig"] == {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}}),
    ("google", {"tools": TOOLS, "tool_choice": "required"},
     lambda b: b["tools"] == [{"functionDeclarations": [{"name": "get_weather", "description": "weather of a city",
                                                         "parametersJsonSchema": TOOLS[0]["function"]["parameters"]}]}]
     and b["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}),
    ("google", {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     lambda b: b["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}),
    ("google", {"tools": [{**TOOLS[0], "function": {**TOOLS[0]["function"], "strict": True}}]},
     lambda b: b["toolConfig"] == {"functionCallingConfig": {"mode": "VALIDATED"}}),
    ("google", {"messages": image()}, lambda b: b["contents"][0]["parts"] == [
        {"text": "what is it?"}, {"inlineData": {"mimeType": "image/png", "data": PNG.split(",")[1]}}]),
    ("google", {"messages": [{"role": "developer", "content": "a"}, {"role": "system", "content": "b"},
                             {"role": "user", "content": "u"}]},
     lambda b: b["systemInstruction"] == {"parts": [{"text": "a"}, {"text": "b"}]}),
]  # fmt: skip

# (provider, request fields, the parameter the 400 names)
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    *((p, {"logprobs": True}, "logprobs") for p in ("openai", "anthropic", "google", "xai", "deepseek")),
    *((p, {"n": 2}, "n") for p in ("openai", "anthropic", "google", "xai", "deepseek")),
    ("openai", {"functions": [{"name": "f"}]}, "functions"),
    ("openai", {"messages": [{"role": "user", "content": "x", "audio": {"id": "a"}}]}, "messages[0].audio"),
    ("xai", {"reasoning_effort": "low"}, "reasoning_effort"),
    ("deepseek", {"seed": 1}, "seed"),
    ("deepseek", {"user": "u"}, "user"),
    ("deepseek", {"response_format": SCHEMA}, "response_format"),
    ("deepseek", {"messages": image()}, "messages[0].content"),
    ("deepseek", {"tools": TOOLS, "parallel_tool_calls": False}, "parallel_tool_calls"),
    ("anthropic", {"temperature": 1.5}, "temperature"),
    ("anthropic", {"seed": 1}, "seed"),
    ("anthropic", {"presence_penalty": 0.1}, "presence_penalty"),
    ("anthropic", {"frequency_penalty": 0.1}, "frequency_penalty"),
    ("anthropic", {"response_format": {"type": "json_object"}}, "response_format"),
    ("anthropic", {"messages": [{"role": "user", "content": "x", "name": "ann"}]}, "messages[0].name"),
    ("anthropic", {"messages": image(detail="low")}, "messages[0].content[1].image_url.detail"),
    ("anthropic", {"messages": image("data:image/bmp;base64,Qk0=")}, "messages[0].content[1].image_url.url"),
    ("anthropic", {"messages": image("data:image/png;base64,@@@")}, "messages[0].content[1].image_url.url"),
    ("google", {"user": "u"}, "user"),
    ("google", {"tools": TOOLS, "parallel_tool_calls": False}, "parallel_tool_calls"),
    ("google", {"messages": image("https://example.com/cat.jpg")}, "messages[0].content[1].image_url.url"),
    ("google", {"messages": [{"role": "user", "content": "x", "name": "ann"}]}, "messages[0].name"),
    ("google", {"reasoning_effort": "high"}, "reasoning_effort"),
]  # fmt: skip


def _request(provider: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {**chat_body(model_of(provider)), **fields}


@pytest.mark.parametrize(("provider", "fields", "check"), MAPPED)
async def test_each_parameter_reaches_the_provider_as_it_says_it(
    make_app, standin, provider, fields, check
):
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        response = await client.http.post(URL, json=_request(provider, fields))
    assert response.status_code == 200, response.text
    sent = standin.received[0].body
    assert check(sent), json.dumps(sent)


@pytest.mark.parametrize(("provider", "fields", "param"), REFUSED)
async def test_what_a_provider_cannot_take_is_a_400_naming_it_and_the_provider(
    make_app, standin, provider, fields, param
):
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        for streamed in (False, True):
            body = {**_request(provider, fields), **({"stream": True} if streamed else {})}
            response = await client.http.post(URL, json=body)
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["type"] == "unsupported_parameter"
            assert error["param"] == param
            assert error["message"].startswith(f"{param}: ")
            assert f"(provider {provider})" in error["message"]
            assert error["provider"] == provider
    assert standin.count == 0  # refused before anything was sent


# --- tool calling round trips ---------------------------------------------------------------------
def _tool_turns(call_id: str, arguments: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "18 C"},
    ]


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("provider", ["openai", "xai", "deepseek", "anthropic", "google"])
async def test_tool_calling_round_trip(make_app, standin, provider, streamed):
    dialect = provider if provider in ("xai", "deepseek") else "openai"
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        # First the model calls the tool, then it answers with the tool's result.
        standin.behave(
            text="", tool_calls=(ToolCall("get_weather", {"city": "Paris"}),), dialect=dialect
        )
        extra = {"stream": True} if streamed else {}
        first = await client.http.post(
            URL,
            json={**chat_body(model_of(provider), "weather in Paris?"), "tools": TOOLS, **extra},
        )
        assert first.status_code == 200, first.text
        if streamed:
            pieces = [
                json.loads(block.removeprefix("data: "))
                for block in first.text.split("\n\n")
                if block.strip() and block != "data: [DONE]"
            ]
            fragments = [
                t
                for p in pieces
                if p["choices"]
                for t in p["choices"][0]["delta"].get("tool_calls") or ()
            ]
            call_id = fragments[0]["id"]
            arguments = "".join(f["function"].get("arguments") or "" for f in fragments)
        else:
            call = first.json()["choices"][0]["message"]["tool_calls"][0]
            call_id, arguments = call["id"], call["function"]["arguments"]
        assert json.loads(arguments) == {"city": "Paris"}

        standin.behave(text="It is 18 C in Paris.", dialect=dialect)
        second = await client.http.post(
            URL,
            json={
                "model": model_of(provider),
                "messages": _tool_turns(call_id, arguments),
                "tools": TOOLS,
                **extra,
            },
        )
        assert second.status_code == 200, second.text
        if streamed:
            text = "".join(
                json.loads(block.removeprefix("data: "))["choices"][0]["delta"].get("content") or ""
                for block in second.text.split("\n\n")
                if block.strip() and block != "data: [DONE]"
            )
        else:
            text = second.json()["choices"][0]["message"]["content"]
        assert text == "It is 18 C in Paris."
    sent = standin.received[1].body
    if provider == "anthropic":
        assert sent["messages"][1] == {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": call_id,
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        }
        assert sent["messages"][2] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "18 C"}],
        }
    elif provider == "google":
        assert sent["contents"][1] == {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        }
        assert sent["contents"][2] == {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": "18 C"}}}
            ],
        }
    else:
        assert sent["messages"][1]["tool_calls"][0]["id"] == call_id
        assert sent["messages"][2] == {"role": "tool", "content": "18 C", "tool_call_id": call_id}


@pytest.mark.parametrize("provider", ["anthropic", "google"])
async def test_tool_arguments_that_are_not_a_json_object_are_refused(make_app, standin, provider):
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        response = await client.http.post(
            URL,
            json={
                "model": model_of(provider),
                "messages": _tool_turns("call_1", "[1, 2]"),
                "tools": TOOLS,
            },
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[1].tool_calls[0].function.arguments"
    assert standin.count == 0


async def test_a_gemini_tool_result_must_answer_an_earlier_call(make_app, standin):
    messages = [
        {"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "nope", "content": "1"},
    ]
    async with make_app(veritta_llm_allowed_providers=ALL, **KEYS) as client:
        response = await client.http.post(
            URL, json={"model": model_of("google"), "messages": messages}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[1].tool_call_id"


async def test_a_fallback_that_cannot_take_the_request_is_skipped(make_app, standin):
    # seed: OpenAI takes it, Anthropic not (skipped), Gemini does: the fallback is Gemini.
    async with make_app(
        veritta_llm_allowed_providers=ALL,
        **KEYS,
        llm_fallbacks="openai=anthropic/claude-x,google/gemini-2.0-flash",
    ) as client:
        client.services.gateway.breaker("openai")._open()
        response = await client.http.post(URL, json=chat_body("openai/gpt", seed=3))
    assert response.status_code == 200
    assert response.headers["x-techno-os-provider"] == "google"
    assert response.json()["model"] == "google/gemini-2.0-flash"
    assert standin.received[0].body["generationConfig"]["seed"] == 3
