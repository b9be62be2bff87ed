"""All routers of the API."""

from __future__ import annotations

from fastapi import APIRouter

from techno_os_api.api.routes import chat, health, metrics, preferences, providers

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(chat.router)
api_router.include_router(providers.router)
api_router.include_router(preferences.router)
