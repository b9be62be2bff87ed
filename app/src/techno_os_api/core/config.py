"""The service's settings: one pydantic-settings class, read from the environment at start-up.

Invalid settings stop the service with a message that names the environment variable at fault
(`load_settings` turns pydantic's error into a `SettingsError`). Secrets (API keys, the database
password and URL) are `SecretStr`, so neither `repr(settings)` nor a log line can show them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Every provider the gateway knows, in the order /llm/providers lists them. Metric label values
# and allowlist entries come only from this set.
KNOWN_PROVIDERS: Final[tuple[str, ...]] = (
    "fake",
    "openai",
    "anthropic",
    "google",
    "xai",
    "deepseek",
)

ALLOWLIST_ENV: Final = "VERITTA_LLM_ALLOWED_PROVIDERS"


class SettingsError(RuntimeError):
    """The environment does not describe a valid configuration; the message says why."""


def _known() -> str:
    return ", ".join(KNOWN_PROVIDERS)


class Settings(BaseSettings):
    """Every setting of the service. Field `foo_bar` is read from env `FOO_BAR`."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_ignore_empty=True,  # VAR="" means unset
        extra="ignore",
        frozen=True,
    )

    # --- LLM gateway -----------------------------------------------------------------------
    veritta_llm_allowed_providers: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Comma-separated allowlist; unset or empty allows no provider."
    )
    llm_provider: str = Field(default="fake", description="Provider for a model with no prefix.")
    llm_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    llm_circuit_failure_threshold: int = Field(default=3, ge=1)
    llm_circuit_cooldown_seconds: float = Field(default=60.0, gt=0)

    openai_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    google_api_key: SecretStr | None = None
    xai_api_key: SecretStr | None = None
    deepseek_api_key: SecretStr | None = None

    openai_base_url: str = "https://api.openai.com/v1"
    anthropic_base_url: str = "https://api.anthropic.com"
    google_base_url: str = "https://generativelanguage.googleapis.com"
    xai_base_url: str = "https://api.x.ai/v1"
    deepseek_base_url: str = "https://api.deepseek.com"
    anthropic_version: str = "2023-06-01"

    # --- Database ----------------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None, description="postgresql://user:pass@host:port/db; wins over DB_*."
    )
    db_host: str = "localhost"
    db_port: int = Field(default=5432, ge=1, le=65535)
    db_user: str = "techno_user"
    db_password: SecretStr = SecretStr("")
    db_name: str = "techno_os"
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=5, ge=0)
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_wait_timeout_seconds: float = Field(default=60.0, ge=0)

    # --- Server (read by `python -m techno_os_api.serve`) ---------------------------------------
    api_host: str = "0.0.0.0"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_access_log: bool = True
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("veritta_llm_allowed_providers", mode="before")
    @classmethod
    def _parse_allowlist(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else list(value)
        names: list[str] = []
        for item in items:
            name = str(item).strip().lower()
            if name and name not in names:
                names.append(name)
        unknown = [n for n in names if n not in KNOWN_PROVIDERS]
        if unknown:
            raise ValueError(
                f"unknown provider name(s) {', '.join(map(repr, unknown))}; "
                f"known providers: {_known()}"
            )
        return tuple(names)

    @field_validator("llm_provider", mode="before")
    @classmethod
    def _parse_provider(cls, value: Any) -> str:
        name = str(value).strip().lower()
        if name not in KNOWN_PROVIDERS:
            raise ValueError(f"unknown provider {name!r}; known providers: {_known()}")
        return name

    @field_validator(
        "openai_api_key",
        "anthropic_api_key",
        "google_api_key",
        "xai_api_key",
        "deepseek_api_key",
        mode="before",
    )
    @classmethod
    def _blank_key_is_missing(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str) and not text.strip():
            return None
        return value

    @field_validator(
        "openai_base_url",
        "anthropic_base_url",
        "google_base_url",
        "xai_base_url",
        "deepseek_base_url",
    )
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _default_provider_is_allowed(self) -> Settings:
        allowed = self.veritta_llm_allowed_providers
        if allowed and self.llm_provider not in allowed:
            raise ValueError(
                f"LLM_PROVIDER={self.llm_provider!r} is not in {ALLOWLIST_ENV} "
                f"({', '.join(allowed)}): add it to the allowlist or choose an allowed provider"
            )
        if not allowed and "llm_provider" in self.model_fields_set:
            raise ValueError(
                f"LLM_PROVIDER={self.llm_provider!r} is set but {ALLOWLIST_ENV} is unset or "
                f"empty, so no provider is allowed (fail-closed): set {ALLOWLIST_ENV}"
            )
        return self

    # --- helpers ---------------------------------------------------------------------------------
    @property
    def allowed_providers(self) -> frozenset[str]:
        return frozenset(self.veritta_llm_allowed_providers)

    def api_key(self, provider: str) -> str | None:
        """The provider's API key, or None when it has none (or needs none)."""
        secret: SecretStr | None = getattr(self, f"{provider}_api_key", None)
        return secret.get_secret_value() if secret is not None else None

    def base_url(self, provider: str) -> str:
        url: str = getattr(self, f"{provider}_base_url")
        return url


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable rather than the field."""
    lines = ["invalid configuration:"]
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        variable = location.upper() if location else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"  {variable}: {message}")
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise `SettingsError` with a readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
