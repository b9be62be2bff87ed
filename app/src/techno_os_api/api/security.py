"""The client key of a request, as route dependencies: `ClientKeyDep` for any valid key,
`AdminKeyDep` for an admin key, `authorize_user` for a user's own data."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from techno_os_api.api.deps import services
from techno_os_api.auth.keys import ClientKey
from techno_os_api.core.errors import PERMISSION_DENIED, APIError


async def client_key(request: Request) -> ClientKey:
    # request.client is the peer, or the client named by X-Forwarded-For when the peer is a
    # trusted proxy (uvicorn --forwarded-allow-ips): never a header from anyone else.
    address = request.client.host if request.client else "unknown"
    return await services(request).authenticator.authenticate(
        request.headers.get("authorization"), address
    )


async def admin_key(request: Request) -> ClientKey:
    key = await client_key(request)
    if not key.is_admin:
        services(request).metrics.count_refusal("permission")
        raise APIError(PERMISSION_DENIED, "this endpoint needs an admin key")
    return key


ClientKeyDep = Annotated[ClientKey, Depends(client_key)]
AdminKeyDep = Annotated[ClientKey, Depends(admin_key)]


def authorize_user(request: Request, key: ClientKey, user_id: str) -> None:
    """A user key reaches only its own user's data; an admin key any user's."""
    if key.is_admin or key.user_id == user_id:
        return
    services(request).metrics.count_refusal("permission")
    raise APIError(
        PERMISSION_DENIED,
        "this key acts for another user: it may read and write only its own preferences",
    )
