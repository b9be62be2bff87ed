"""What the routes depend on, injected from the application's services so tests can swap real
parts (another database, a loopback provider, a driven clock)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_os_api.core.config import Settings
from techno_os_api.db.preferences import PreferencesRepository
from techno_os_api.llm.gateway import LLMGateway
from techno_os_api.llm.metrics import Metrics


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    gateway: LLMGateway
    engine: AsyncEngine
    preferences: PreferencesRepository
    http_client: httpx.AsyncClient


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_gateway(request: Request) -> LLMGateway:
    return get_services(request).gateway


def get_metrics(request: Request) -> Metrics:
    return get_services(request).metrics


def get_engine(request: Request) -> AsyncEngine:
    return get_services(request).engine


def get_preferences(request: Request) -> PreferencesRepository:
    return get_services(request).preferences


GatewayDep = Annotated[LLMGateway, Depends(get_gateway)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
PreferencesDep = Annotated[PreferencesRepository, Depends(get_preferences)]
