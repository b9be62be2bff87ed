"""Provider adapters, one module per wire format: a neutral request in (the validated OpenAI
request), the provider's format out and back, usage read from the provider's own fields. See
`base` for what they share."""

from __future__ import annotations

from collections.abc import Mapping

from techno_os_api.core.config import KNOWN_PROVIDERS, Settings
from techno_os_api.llm.providers.anthropic import AnthropicProvider
from techno_os_api.llm.providers.base import ModelFailure, Provider, Refused
from techno_os_api.llm.providers.fake import FakeProvider
from techno_os_api.llm.providers.google import GoogleProvider
from techno_os_api.llm.providers.openai_format import OpenAICompatibleProvider
from techno_os_api.llm.transport import Transport

__all__ = ["ModelFailure", "Provider", "Refused", "build_providers"]


def build_providers(settings: Settings, transport: Transport) -> Mapping[str, Provider]:
    """One adapter per known provider, keys and base URLs from the settings."""
    providers: dict[str, Provider] = {"fake": FakeProvider()}
    for name in ("openai", "xai", "deepseek"):
        providers[name] = OpenAICompatibleProvider(
            name, transport, settings.base_url(name), settings.api_key(name)
        )
    providers["anthropic"] = AnthropicProvider(
        "anthropic",
        transport,
        settings.base_url("anthropic"),
        settings.api_key("anthropic"),
        settings.anthropic_version,
        settings.llm_default_max_tokens,
    )
    providers["google"] = GoogleProvider(
        "google", transport, settings.base_url("google"), settings.api_key("google")
    )
    assert set(providers) == set(KNOWN_PROVIDERS)
    return providers
