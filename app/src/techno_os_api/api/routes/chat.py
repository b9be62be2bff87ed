"""OpenAI-compatible chat completions."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from techno_os_api.api.deps import GatewayDep
from techno_os_api.api.security import ClientKeyDep
from techno_os_api.llm.gateway import to_response
from techno_os_api.llm.schemas import ChatCompletionRequest, ChatCompletionResponse

router = APIRouter(tags=["llm"])

PROVIDER_HEADER = "x-techno-os-provider"


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={
        400: {"description": "unknown provider prefix, or max_tokens above the key's cap"},
        401: {"description": "missing, malformed, unknown, revoked or expired client key"},
        403: {"description": "provider not allowed, or not allowed for this key"},
        429: {"description": "the key's rate limit or budget (Retry-After)"},
        502: {"description": "the provider failed"},
        503: {"description": "circuit open (Retry-After), or provider without API key"},
        504: {"description": "the provider did not answer within LLM_TIMEOUT_SECONDS"},
    },
)
async def chat_completions(
    body: ChatCompletionRequest, key: ClientKeyDep, gateway: GatewayDep
) -> Response:
    """`model` is `provider/model` (`openai/gpt-4o-mini`, `fake/echo`) or a bare model name for
    LLM_PROVIDER."""
    answer = await gateway.complete(body, key)
    # Already a validated model: serialise it once, without FastAPI validating it again.
    return Response(
        to_response(answer, body.model).model_dump_json(),
        media_type="application/json",
        headers={PROVIDER_HEADER: answer.route.provider},
    )
