"""The in-process provider: deterministic, no network. It echoes the last user message, one
token per word, whole or streamed word by word, so budgets, limits and streams can be exercised
without a real provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from techno_os_api.llm.completion import LENGTH, STOP, Completion, Delta
from techno_os_api.llm.providers.base import check_parameters
from techno_os_api.llm.schemas import ChatCompletionRequest
from techno_os_api.llm.usage import Usage

# It answers the same whatever they say, but takes every parameter an adapter may translate.
HANDLED = frozenset(
    name for name in ChatCompletionRequest.model_fields if name not in ("model", "messages")
)


@dataclass(frozen=True)
class FakeCall:
    words: tuple[str, ...]
    finish_reason: str
    prompt_tokens: int


class FakeProvider:
    name = "fake"
    requires_key = False
    has_key = False

    def prepare(
        self, request: ChatCompletionRequest, model: str, max_tokens: int | None
    ) -> FakeCall:
        check_parameters(self.name, request, HANDLED)
        last_user = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
        words = f"echo: {last_user}".split()
        finish_reason = STOP
        if max_tokens is not None and len(words) > max_tokens:
            words, finish_reason = words[:max_tokens], LENGTH
        prompt_tokens = sum(len(m.text().split()) for m in request.messages)
        return FakeCall(tuple(words), finish_reason, prompt_tokens)

    async def complete(self, prepared: FakeCall) -> Completion:
        usage = Usage(prepared.prompt_tokens, len(prepared.words))
        return Completion(" ".join(prepared.words), prepared.finish_reason, usage)

    async def stream(self, prepared: FakeCall) -> AsyncGenerator[Delta, None]:
        for index, word in enumerate(prepared.words):
            yield Delta(content=word if index == 0 else f" {word}")
            await asyncio.sleep(0)  # a real stream yields to the loop between its chunks
        usage = Usage(prepared.prompt_tokens, len(prepared.words))
        yield Delta(finish_reason=prepared.finish_reason, usage=usage)
