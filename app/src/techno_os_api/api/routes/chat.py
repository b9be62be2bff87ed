"""OpenAI-compatible chat completions, whole or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import Response

from techno_os_api.api.deps import GatewayDep
from techno_os_api.api.security import ClientKeyDep
from techno_os_api.api.streaming import EventStreamResponse
from techno_os_api.core.errors import APIError
from techno_os_api.llm.gateway import ChatStream
from techno_os_api.llm.responses import DONE, ChunkEncoder, completion_body, error_event
from techno_os_api.llm.schemas import ChatCompletionRequest

router = APIRouter(tags=["llm"])

PROVIDER_HEADER = "x-techno-os-provider"


@router.post(
    "/v1/chat/completions",
    responses={
        200: {"description": "a chat.completion, or with stream=true chat.completion.chunk SSE"},
        400: {
            "description": "unknown provider, a parameter the provider cannot take, max_tokens "
            "above the key's cap, or the provider refused the request"
        },  # fmt: skip
        401: {"description": "missing, malformed, unknown, revoked or expired client key"},
        403: {"description": "provider not allowed, or not allowed for this key"},
        429: {"description": "the key's rate limit or budget, or the provider's (Retry-After)"},
        502: {"description": "the provider failed, or refused the gateway's provider key"},
        503: {"description": "circuit open (Retry-After), provider without API key, overloaded"},
        504: {"description": "the provider did not answer within LLM_TIMEOUT_SECONDS"},
    },
)
async def chat_completions(
    body: ChatCompletionRequest, key: ClientKeyDep, gateway: GatewayDep
) -> Response:
    """`model` is `provider/model` (`openai/gpt-4o-mini`, `fake/echo`) or a bare model name for
    LLM_PROVIDER. The answer's `model` is what was asked for, or what answered after a
    fallback; the `x-techno-os-provider` header names the provider that answered."""
    if body.stream:
        stream = await gateway.stream(body, key)
        model = str(stream.route) if stream.fallback else body.model
        encoder = ChunkEncoder(model, body.include_usage)
        return EventStreamResponse(
            _events(stream, encoder, body.include_usage),
            stream.aclose,
            {PROVIDER_HEADER: stream.route.provider},
        )
    answer = await gateway.complete(body, key)
    model = str(answer.route) if answer.fallback else body.model
    return Response(
        completion_body(answer.completion, model),
        media_type="application/json",
        headers={PROVIDER_HEADER: answer.route.provider},
    )


async def _events(
    stream: ChatStream, encoder: ChunkEncoder, include_usage: bool
) -> AsyncIterator[bytes]:
    try:
        while (delta := await stream.next()) is not None:
            if delta.content or delta.refusal or delta.tool_calls or delta.finish_reason:
                yield encoder.delta(delta)
    except APIError as exc:  # after the first chunk: in-band, and no [DONE]
        yield error_event(exc.body())
        return
    if include_usage and stream.usage is not None:
        yield encoder.usage(stream.usage)
    yield DONE
