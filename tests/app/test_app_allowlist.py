"""VERITTA_LLM_ALLOWED_PROVIDERS fails closed: a refused call never reaches the network."""

from __future__ import annotations

import pytest
from app_helpers import chat_body
from techno_os_api.core.config import SettingsError, load_settings

URL = "/v1/chat/completions"
KEYS = {f"{p}_api_key": f"key-{p}" for p in ("openai", "anthropic", "google", "xai", "deepseek")}


@pytest.mark.parametrize("allowlist", [None, "", "  ,  "], ids=["unset", "empty", "blank"])
async def test_unset_or_empty_allowlist_refuses_every_provider(make_app, standin, allowlist):
    overrides = dict(KEYS)
    if allowlist is not None:
        overrides["veritta_llm_allowed_providers"] = allowlist
    async with make_app(**overrides) as client:
        for model in ("fake/echo", "echo", "openai/gpt-4o-mini", "anthropic/claude", "google/g"):
            response = await client.http.post(URL, json=chat_body(model))
            assert response.status_code == 403, model
            error = response.json()["error"]
            assert error["type"] == "not_allowed"
            assert "unset or empty, so no provider is allowed" in error["message"]
        providers = (await client.http.get("/llm/providers")).json()["providers"]
        assert not any(p["allowed"] for p in providers)
    assert standin.count == 0


async def test_provider_outside_the_list_is_403_before_any_network(make_app, standin):
    async with make_app(veritta_llm_allowed_providers="fake,openai", **KEYS) as client:
        for name in ("anthropic", "google", "xai", "deepseek"):
            response = await client.http.post(URL, json=chat_body(f"{name}/some-model"))
            assert response.status_code == 403
            error = response.json()["error"]
            assert error == {
                "message": f"provider '{name}' is not allowed by VERITTA_LLM_ALLOWED_PROVIDERS "
                "(it allows only: fake, openai)",
                "type": "not_allowed",
                "param": "model",
                "code": "not_allowed",
                "provider": name,
            }
            assert (
                await client.metric("llm_errors_total", provider=name, error_type="not_allowed")
                == 1
            )
        assert standin.count == 0
        # ...while an allowed provider does reach it.
        assert (await client.http.post(URL, json=chat_body("openai/gpt"))).status_code == 200
    assert standin.count == 1


def test_unknown_name_in_allowlist_stops_startup(monkeypatch, standin):
    monkeypatch.setenv("VERITTA_LLM_ALLOWED_PROVIDERS", "fake,openai,skynet")
    with pytest.raises(SettingsError, match="unknown provider name.*'skynet'"):
        load_settings()
    assert standin.count == 0


async def test_unknown_provider_prefix_is_400_and_sends_nothing(make_app, standin):
    async with make_app(veritta_llm_allowed_providers="fake,openai", **KEYS) as client:
        response = await client.http.post(URL, json=chat_body("skynet/t-800"))
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "unknown_provider"
        assert "unknown provider 'skynet'" in response.json()["error"]["message"]
        samples = await client.metrics()
    assert not any(dict(labels).get("provider") == "skynet" for _, labels in samples)
    assert standin.count == 0


async def test_allowed_provider_without_key_is_refused_and_listed(make_app, standin):
    async with make_app(veritta_llm_allowed_providers="fake,anthropic") as client:
        response = await client.http.post(URL, json=chat_body("anthropic/claude-3-5-haiku"))
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["type"] == "missing_api_key"
        assert "ANTHROPIC_API_KEY is not set" in error["message"]
        assert (
            await client.metric(
                "llm_errors_total", provider="anthropic", error_type="missing_api_key"
            )
            == 1
        )
        providers = {
            p["name"]: p for p in (await client.http.get("/llm/providers")).json()["providers"]
        }
    assert standin.count == 0
    assert providers["anthropic"]["allowed"] is True
    assert providers["anthropic"]["api_key_present"] is False
    assert providers["anthropic"]["usable"] is False
    assert providers["fake"]["usable"] is True


async def test_providers_listing_never_shows_keys(make_app):
    async with make_app(veritta_llm_allowed_providers="fake,openai,google", **KEYS) as client:
        response = await client.http.get("/llm/providers")
    assert response.status_code == 200
    assert "key-" not in response.text
    body = response.json()
    assert body["default_provider"] == "fake"
    assert [p["name"] for p in body["providers"]] == [
        "fake",
        "openai",
        "anthropic",
        "google",
        "xai",
        "deepseek",
    ]
    openai = body["providers"][1]
    assert openai == {
        "name": "openai",
        "allowed": True,
        "requires_api_key": True,
        "api_key_present": True,
        "usable": True,
        "circuit_state": "CLOSED",
        "consecutive_failures": 0,
        "seconds_until_half_open": 0.0,
    }
