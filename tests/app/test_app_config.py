"""Settings are validated at start-up with messages that name the variable at fault."""

from __future__ import annotations

import subprocess
import sys

import pytest
from app_helpers import subprocess_env
from pydantic import SecretStr
from techno_os_api.core.config import Settings, SettingsError, load_settings


def test_defaults_match_the_runbook():
    settings = load_settings()
    assert settings.llm_provider == "fake"
    assert settings.llm_timeout_seconds == 30
    assert settings.llm_circuit_failure_threshold == 3
    assert settings.llm_circuit_cooldown_seconds == 60
    assert settings.veritta_llm_allowed_providers == ()  # fail-closed


def test_allowlist_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("VERITTA_LLM_ALLOWED_PROVIDERS", " Fake, openai ,,openai ")
    monkeypatch.setenv("LLM_PROVIDER", "openai")
    settings = load_settings()
    assert settings.veritta_llm_allowed_providers == ("fake", "openai")
    assert settings.allowed_providers == {"fake", "openai"}
    assert settings.llm_provider == "openai"


def test_unknown_provider_in_allowlist_is_a_startup_error(monkeypatch):
    monkeypatch.setenv("VERITTA_LLM_ALLOWED_PROVIDERS", "fake,opneai")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "VERITTA_LLM_ALLOWED_PROVIDERS" in message
    assert "'opneai'" in message
    assert "known providers: fake, openai, anthropic, google, xai, deepseek" in message


def test_unknown_default_provider_is_a_startup_error(monkeypatch):
    monkeypatch.setenv("VERITTA_LLM_ALLOWED_PROVIDERS", "fake")
    monkeypatch.setenv("LLM_PROVIDER", "mistral")
    with pytest.raises(SettingsError, match=r"LLM_PROVIDER: unknown provider 'mistral'"):
        load_settings()


def test_default_provider_outside_allowlist_is_a_startup_error(monkeypatch):
    monkeypatch.setenv("VERITTA_LLM_ALLOWED_PROVIDERS", "openai")
    with pytest.raises(SettingsError) as caught:
        load_settings()  # LLM_PROVIDER defaults to fake
    assert "LLM_PROVIDER='fake' is not in VERITTA_LLM_ALLOWED_PROVIDERS (openai)" in str(
        caught.value
    )


def test_explicit_default_provider_with_empty_allowlist_is_a_startup_error(monkeypatch):
    monkeypatch.setenv("VERITTA_LLM_ALLOWED_PROVIDERS", "")
    monkeypatch.setenv("LLM_PROVIDER", "openai")
    with pytest.raises(SettingsError, match="unset or empty, so no provider is allowed"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LLM_TIMEOUT_SECONDS", "0", "LLM_TIMEOUT_SECONDS: Input should be greater than 0"),
        ("LLM_TIMEOUT_SECONDS", "soon", "LLM_TIMEOUT_SECONDS: Input should be a valid number"),
        ("LLM_CIRCUIT_FAILURE_THRESHOLD", "0", "LLM_CIRCUIT_FAILURE_THRESHOLD: Input should be"),
        ("LLM_CIRCUIT_COOLDOWN_SECONDS", "-1", "LLM_CIRCUIT_COOLDOWN_SECONDS: Input should be"),
        ("OPENAI_BASE_URL", "api.openai.com", "OPENAI_BASE_URL: must be an http:// or https://"),
        ("DB_PORT", "x", "DB_PORT: Input should be a valid integer"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert expected in str(caught.value)


def test_secrets_never_appear_in_repr(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    monkeypatch.setenv("DB_PASSWORD", "db-very-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:url-very-secret@h/db")
    settings = load_settings()
    assert settings.api_key("openai") == "sk-very-secret"
    text = repr(settings) + str(settings)
    for secret in ("sk-very-secret", "db-very-secret", "url-very-secret"):
        assert secret not in text


def test_blank_key_counts_as_missing():
    settings = Settings(openai_api_key=SecretStr("  "))
    assert settings.api_key("openai") is None


def test_importing_the_app_with_bad_settings_fails_with_the_reason():
    result = subprocess.run(
        [sys.executable, "-c", "import techno_os_api.main"],
        env=subprocess_env(VERITTA_LLM_ALLOWED_PROVIDERS="fake,bogus"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "VERITTA_LLM_ALLOWED_PROVIDERS: unknown provider name(s) 'bogus'" in result.stderr


def test_serve_refuses_to_start_with_bad_settings():
    result = subprocess.run(
        [sys.executable, "-m", "techno_os_api.serve"],
        env=subprocess_env(VERITTA_LLM_ALLOWED_PROVIDERS="openai", LLM_PROVIDER="google"),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("serve: invalid configuration:")
    assert "LLM_PROVIDER='google' is not in VERITTA_LLM_ALLOWED_PROVIDERS" in result.stderr
    assert "Traceback" not in result.stderr
