"""Helpers shared by the app tests (imported by module name; tests/app is on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from techno_os_api.auth import keys
from techno_os_api.auth.keys import BudgetPeriod, ClientKey, Role
from techno_os_api.core.config import Settings
from techno_os_api.db.api_keys import KeyRepository, NewKey

REMOTE_PROVIDERS = ("openai", "anthropic", "google", "xai", "deepseek")

# Every variable the app reads; cleared so the developer's environment cannot leak into a test.
APP_ENV_VARS = frozenset(name.upper() for name in Settings.model_fields)


class FakeClock:
    """The breakers' clock, driven by the test instead of by sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def create_key(
    repository: KeyRepository,
    *,
    user: str = "tests",
    role: Role = Role.ADMIN,
    budget_period: BudgetPeriod = BudgetPeriod.MONTH,
    **fields: Any,
) -> tuple[ClientKey, str]:
    """A client key stored in the test database; returns it and its secret."""
    secret = keys.new_secret()
    key = await repository.create(
        NewKey(
            id=keys.new_key_id(),
            key_hash=keys.digest(secret),
            key_prefix=keys.display_prefix(secret),
            name=fields.pop("name", "test key"),
            user_id=user,
            role=role,
            budget_period=budget_period,
            **fields,
        )
    )
    return key, secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class AppClient:
    """An app under test. `http` sends the admin key `key` unless a request says otherwise."""

    app: FastAPI
    http: httpx.AsyncClient
    key: str = ""

    @property
    def services(self) -> Any:
        return self.app.state.services

    async def new_key(self, **fields: Any) -> str:
        """Create a key (user key unless role=Role.ADMIN) and return its secret."""
        fields.setdefault("role", Role.USER)
        return (await create_key(self.services.keys, **fields))[1]

    async def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        response = await self.http.get("/metrics")
        assert response.status_code == 200
        return parse_metrics(response.text)

    async def metric(self, name: str, **labels: str) -> float | None:
        return (await self.metrics()).get((name, frozenset(labels.items())))


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def chat_body(
    model: str = "fake/echo", content: str = "hello world", **extra: Any
) -> dict[str, Any]:
    """An OpenAI chat completion request body."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test process's environment without the app's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in APP_ENV_VARS}
    env.update(extra)
    return env


def run_migrate(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Exactly what the deploy runs."""
    return subprocess.run(
        [sys.executable, "-m", "techno_os_api.migrate", *args],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
