"""Liveness, readiness and version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from techno_os_api import __version__
from techno_os_api.api.deps import EngineDep
from techno_os_api.db.engine import DatabaseUnavailable, ping

router = APIRouter(tags=["health"])

READY_TIMEOUT_SECONDS = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers. Never touches the database (the runbook compares the body
    literally)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "the database is unreachable"}})
async def ready(engine: EngineDep) -> Any:
    """Readiness: the database answers `SELECT 1`."""
    try:
        await ping(engine, READY_TIMEOUT_SECONDS)
    except DatabaseUnavailable as exc:
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "reason": str(exc)},
            status_code=503,
        )
    return {"status": "ok", "database": "ok"}


@router.get("/version")
async def version() -> dict[str, str]:
    return {"name": "techno-os-api", "version": __version__}
