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
    # The whole call, fallbacks included (default: twice LLM_TIMEOUT_SECONDS); each attempt
    # gets the smaller of LLM_TIMEOUT_SECONDS and what is left of it.
    llm_deadline_seconds: float | None = Field(default=None, gt=0, le=3600)
    llm_stream_idle_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # Ordered alternatives per provider: `openai=anthropic/claude-3-5-haiku-latest,google/
    # gemini-2.0-flash;anthropic=openai/gpt-4o-mini`.
    llm_fallbacks: Annotated[dict[str, tuple[str, ...]], NoDecode] = Field(default_factory=dict)

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
    # Which of the host's release slots this process is (set by techno-os-release): /version
    # says it, so a release can tell when the front has switched.
    api_instance: str = ""
    # While this file exists, /health answers 503 (a release being replaced is drained).
    api_drain_file: str = "/tmp/techno-os.draining"
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # Peers whose X-Forwarded-For is believed (uvicorn --forwarded-allow-ips): the proxy only.
    api_forwarded_allow_ips: str = "127.0.0.1"
    # On SIGTERM (a release stopping the old container), how long requests in flight, streams
    # included, may still run before uvicorn cuts them; the release waits longer than this.
    api_graceful_shutdown_seconds: int = Field(default=60, ge=1)
    api_docs_enabled: bool = Field(default=False, description="serve /docs, /redoc, /openapi.json")

    # --- Client keys -------------------------------------------------------------------------
    auth_cache_ttl_seconds: float = Field(default=30.0, gt=0)
    auth_stale_max_seconds: float = Field(default=600.0, ge=0)
    # Failed authentications from one client address in a clock minute before it gets 429.
    auth_failures_per_minute: int = Field(default=20, ge=1)
    # Defaults of every key (a key's own values win): models it may call (empty: any allowed),
    # a per-call max_tokens cap (unset: none), concurrent calls per API instance.
    key_default_models: Annotated[tuple[str, ...], NoDecode] = ()
    key_default_max_tokens: int | None = Field(default=None, ge=1)
    key_default_max_parallel: int = Field(default=8, ge=1)
    # During a database outage each instance lets a key use this share of its last known
    # headroom (rate limits and budget): the deploy sets it to the number of API instances.
    limits_outage_instances: int = Field(default=1, ge=1)
    # A crashed instance's budget reservations are charged in full after this long.
    budget_reservation_hold_seconds: float = Field(default=3600.0, gt=0)
    usage_flush_interval_seconds: float = Field(default=1.0, gt=0)
    # Prices: the table shipped with the app, overridden by this JSON file (same format).
    llm_prices_file: str | None = None
    # max_tokens the gateway sends (and reserves budget for) when a call names none.
    llm_default_max_tokens: int = Field(default=4096, ge=1)

    # --- Bounds on inputs --------------------------------------------------------------------
    chat_max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    preferences_max_body_bytes: int = Field(default=64 * 1024, ge=256)
    other_max_body_bytes: int = Field(default=64 * 1024, ge=256)
    preferences_max_depth: int = Field(default=32, ge=1, le=512)
    # A provider answer is read up to this many (decompressed) bytes.
    llm_max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # The gateway's own connection pool per provider, and how long a call waits for a slot.
    llm_max_connections: int = Field(default=100, ge=1)
    llm_pool_timeout_seconds: float = Field(default=2.0, gt=0)

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

    @field_validator("llm_fallbacks", mode="before")
    @classmethod
    def _parse_fallbacks(cls, value: Any) -> dict[str, tuple[str, ...]]:
        if value is None or value == "":
            return {}
        if isinstance(value, str):
            chains: dict[str, tuple[str, ...]] = {}
            for entry in value.split(";"):
                if not entry.strip():
                    continue
                source, equals, targets = entry.partition("=")
                if not equals:
                    raise ValueError(
                        f"{entry.strip()!r} is not `provider=provider/model,...` "
                        "(entries separated by ';')"
                    )
                chains[source.strip().lower()] = tuple(
                    t.strip() for t in targets.split(",") if t.strip()
                )
            value = chains
        if not isinstance(value, dict):
            raise ValueError("expected `provider=provider/model,...;...`")
        return {str(k).strip().lower(): tuple(v) for k, v in value.items()}

    @field_validator("key_default_models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))

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
        deadline = self.llm_deadline_seconds
        if deadline is not None and deadline < self.llm_timeout_seconds:
            raise ValueError(
                f"LLM_DEADLINE_SECONDS={deadline:g} is shorter than LLM_TIMEOUT_SECONDS="
                f"{self.llm_timeout_seconds:g}: no call could use its whole timeout"
            )
        self._check_fallbacks()
        if not allowed and "llm_provider" in self.model_fields_set:
            raise ValueError(
                f"LLM_PROVIDER={self.llm_provider!r} is set but {ALLOWLIST_ENV} is unset or "
                f"empty, so no provider is allowed (fail-closed): set {ALLOWLIST_ENV}"
            )
        return self

    def _check_fallbacks(self) -> None:
        """Every chain starts at a known provider and names allowed, usable `provider/model`s."""
        for source, targets in self.llm_fallbacks.items():
            where = f"LLM_FALLBACKS {source}="
            if source not in KNOWN_PROVIDERS:
                raise ValueError(f"{where}: unknown provider {source!r}; known: {_known()}")
            if not targets:
                raise ValueError(f"{where}: names no alternative")
            for target in targets:
                provider, slash, model = target.partition("/")
                if not slash or not model or provider not in KNOWN_PROVIDERS:
                    raise ValueError(
                        f"{where}{target!r}: an alternative is `provider/model` with a known "
                        f"provider ({_known()})"
                    )
                if provider == source:
                    raise ValueError(f"{where}{target!r}: falls back to the same provider")
                if provider not in self.veritta_llm_allowed_providers:
                    raise ValueError(
                        f"{where}{target!r}: {provider} is not in {ALLOWLIST_ENV}; a fallback "
                        "never goes to a provider outside the allowlist"
                    )
                if provider != "fake" and self.api_key(provider) is None:
                    raise ValueError(
                        f"{where}{target!r}: {provider.upper()}_API_KEY is not set; the "
                        "alternative could never answer"
                    )

    @property
    def deadline_seconds(self) -> float:
        return self.llm_deadline_seconds or 2 * self.llm_timeout_seconds

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

    def secret_values(self) -> tuple[str, ...]:
        """Every configured secret (provider keys, database password and URL): what
        `redact` removes from anything a provider sends back before it is shown or logged."""
        values = [self.api_key(name) for name in KNOWN_PROVIDERS]
        values.append(self.db_password.get_secret_value())
        if self.database_url is not None:
            url = self.database_url.get_secret_value()
            values.append(url)
            password = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
            values.append(password)
        # Longest first, so a secret containing another is removed whole.
        return tuple(sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True))


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
