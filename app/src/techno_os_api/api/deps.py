"""What the routes depend on, injected from the application's services so tests can swap real
parts (another database, a loopback provider, a driven clock)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from techno_os_api.auth.admission import Admitter
from techno_os_api.auth.authenticator import Authenticator
from techno_os_api.core.config import Settings
from techno_os_api.db.api_keys import KeyRepository
from techno_os_api.db.calls import CallDatabase
from techno_os_api.db.preferences import PreferencesRepository
from techno_os_api.llm.gateway import LLMGateway
from techno_os_api.llm.metrics import Metrics
from techno_os_api.llm.transport import Transport


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    gateway: LLMGateway
    engine: AsyncEngine
    preferences: PreferencesRepository
    keys: KeyRepository
    authenticator: Authenticator
    admitter: Admitter
    calls: CallDatabase
    transport: Transport


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


# Async on purpose: FastAPI runs sync dependencies in a worker thread, a thread hop per request.
async def get_gateway(request: Request) -> LLMGateway:
    return services(request).gateway


async def get_metrics(request: Request) -> Metrics:
    return services(request).metrics


async def get_engine(request: Request) -> AsyncEngine:
    return services(request).engine


async def get_preferences(request: Request) -> PreferencesRepository:
    return services(request).preferences


async def get_settings(request: Request) -> Settings:
    return services(request).settings


GatewayDep = Annotated[LLMGateway, Depends(get_gateway)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
PreferencesDep = Annotated[PreferencesRepository, Depends(get_preferences)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
