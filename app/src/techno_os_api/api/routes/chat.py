"""OpenAI-compatible chat completions (non-streaming)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from techno_os_api.api.deps import GatewayDep
from techno_os_api.llm.schemas import ChatCompletionRequest, ChatCompletionResponse

router = APIRouter(tags=["llm"])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={
        400: {"description": "unknown provider prefix"},
        403: {"description": "provider not allowed by VERITTA_LLM_ALLOWED_PROVIDERS"},
        502: {"description": "the provider failed or rejected the request"},
        503: {"description": "circuit open (Retry-After), or provider without API key"},
        504: {"description": "the provider did not answer within LLM_TIMEOUT_SECONDS"},
    },
)
async def chat_completions(body: ChatCompletionRequest, gateway: GatewayDep) -> Response:
    """`model` is `provider/model` (`openai/gpt-4o-mini`, `fake/echo`) or a bare model name for
    LLM_PROVIDER."""
    completion = await gateway.chat(body)
    # Already a validated model: serialise it once, without FastAPI validating it again.
    return Response(completion.model_dump_json(), media_type="application/json")
