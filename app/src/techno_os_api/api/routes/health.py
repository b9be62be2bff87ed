"""Liveness, readiness and version."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from techno_os_api import __version__
from techno_os_api.api.deps import EngineDep, SettingsDep
from techno_os_api.db.engine import DatabaseUnavailable, ping

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)

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
        # The driver's message stays in the log: it may name hosts, users or versions.
        log.warning("readiness: database unreachable: %s", exc)
        return JSONResponse(
            {
                "status": "unavailable",
                "database": "unreachable",
                "reason": "the database did not answer (details in the API log)",
            },
            status_code=503,
        )
    return {"status": "ok", "database": "ok"}


@router.get("/version")
async def version(settings: SettingsDep) -> dict[str, str]:
    body = {"name": "techno-os-api", "version": __version__}
    if settings.api_instance:
        body["instance"] = settings.api_instance
    return body
