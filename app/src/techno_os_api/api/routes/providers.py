"""What the gateway would do with each provider: allowed, key present, circuit state. Admin
keys only: it tells which provider accounts the operator holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from techno_os_api.api.deps import GatewayDep
from techno_os_api.api.security import AdminKeyDep

router = APIRouter(tags=["llm"])


@router.get(
    "/llm/providers",
    responses={401: {"description": "missing or invalid key"}, 403: {"description": "not admin"}},
)
async def list_providers(gateway: GatewayDep, key: AdminKeyDep) -> dict[str, Any]:
    """Every known provider. Keys are never shown, only whether one is present."""
    return {
        "default_provider": gateway.default_provider,
        "timeout_seconds": gateway.timeout_seconds,
        "providers": [
            {
                "name": s.name,
                "allowed": s.allowed,
                "requires_api_key": s.requires_api_key,
                "api_key_present": s.api_key_present,
                "usable": s.usable,
                "circuit_state": s.circuit_state,
                "consecutive_failures": s.consecutive_failures,
                "seconds_until_half_open": s.seconds_until_half_open,
            }
            for s in gateway.statuses()
        ],
    }
