"""All routers of the API, each included directly into the app (nesting them under one parent
router makes every request walk an extra level of route matching)."""

from __future__ import annotations

from fastapi import APIRouter

from techno_os_api.api.routes import chat, health, metrics, preferences, providers

# The hot path first: route matching tries them in this order.
routers: tuple[APIRouter, ...] = (
    chat.router,
    health.router,
    metrics.router,
    providers.router,
    preferences.router,
)
