"""Settings, read once at start from the environment and `.env`, refused when unsafe."""
import base64
import binascii
from functools import cached_property
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_LENGTH = 32
DEFAULT_SQLITE_URL = "sqlite:///./tasks.db"
# Values copied from tutorials and templates; a secret that is one of these is no secret.
KNOWN_PLACEHOLDER_SECRETS = {
    "your-secret-key-here-change-in-production",
    "change-me-to-a-random-string-of-32-chars",
    "better-auth-secret-123456789012345678901234567890",
}
# Standard Webhooks: a secret is 24 to 64 random bytes, written as `whsec_` + base64.
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_SECRET_MIN_BYTES = 24
WEBHOOK_SECRET_HOW_TO = (
    "Generate one with: python -c \"import base64, secrets; "
    "print('whsec_' + base64.b64encode(secrets.token_bytes(32)).decode())\""
)


class DatabaseSettings(BaseSettings):
    """What migrations need: only the database. The service's Settings add the rest."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,  # a refused setting may be a secret or a URL with a password
    )

    database_url: str = Field(
        DEFAULT_SQLITE_URL, validation_alias=AliasChoices("DATABASE_URL", "NEON_DB_URL", "database_url")
    )

    @field_validator("database_url", mode="before")
    @classmethod
    def normalise_database_url(cls, url: str | None) -> str:
        """Accept URLs as Neon and Heroku print them; pin the driver we ship."""
        url = (url or "").strip() or DEFAULT_SQLITE_URL
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg2://" + url[len(prefix):]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


class Settings(DatabaseSettings):
    better_auth_secret: SecretStr | None = None
    better_auth_url: str | None = None
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(30, ge=0, le=300)
    jwks_refetch_min_seconds: float = Field(5.0, ge=0)
    jwks_max_age_seconds: float = Field(300.0, gt=0)
    jwks_fetch_timeout_seconds: float = Field(3.0, gt=0)

    cors_origins: str = "http://localhost:3000"
    # How clients reach this service (`https://api.example.com`): names /mcp in the OAuth
    # protected-resource document. Unset: taken from each request's scheme and Host.
    public_url: str | None = None
    rate_limit_per_minute: int = Field(1200, ge=0)
    redis_url: str | None = None

    # Connections per worker process. Requests beyond it wait (at most db_pool_timeout_seconds).
    # How often each worker looks for reminders to fire (§9: within 60 s); 0 turns the loop off.
    reminder_poll_seconds: float = Field(15.0, ge=0, le=50)
    db_pool_size: int = Field(10, ge=1)
    db_pool_timeout_seconds: float = Field(3.0, gt=0)
    db_connect_timeout_seconds: int = Field(3, ge=1)
    # The longest any request waits on the database: one statement, one lock wait, one checkout.
    db_statement_timeout_seconds: float = Field(5.0, gt=0, le=3600)
    # A pooled connection is closed and replaced after this long (Neon advises recycling them).
    db_pool_max_lifetime_seconds: float = Field(1800.0, ge=60)
    # Off only behind PgBouncer older than 1.21 in transaction mode (Neon's pooler keeps them).
    db_prepared_statements: bool = True

    # When set, GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`; unset, it is open.
    metrics_token: SecretStr | None = None

    # Events (contract §10): kept at least this long for /api/changes; older cursors get a 410.
    changes_retention_days: int = Field(30, ge=1, le=3650)
    # Open /api/events streams one user may hold per worker process (past it: 429).
    event_streams_per_user: int = Field(5, ge=1, le=100)

    log_level: str = "INFO"

    # Chat (contract §13): a model behind the Chat Completions API (OpenAI, Gemini's OpenAI endpoint,
    # Ollama, vLLM, LiteLLM). Configured when a key or a base URL is set (a local Ollama needs no
    # key); otherwise the chat routes answer 503 CHAT_NOT_CONFIGURED and everything else works.
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    chat_model: str = Field("gpt-4.1-mini", min_length=1, max_length=200)
    chat_timeout_seconds: float = Field(60.0, gt=0, le=600)  # one turn, model and tools, end to end
    chat_rate_limit_per_minute: int = Field(20, ge=0)  # per user, on top of RATE_LIMIT_PER_MINUTE; 0: off
    # The Agents SDK's traces go to OpenAI's dashboard (with OPENAI_API_KEY): off unless asked for.
    chat_tracing: bool = False

    # Outbound events (webhooks.py): every event POSTed as a CloudEvent, signed when a secret is set.
    events_webhook_url: str | None = None
    events_webhook_secret: SecretStr | None = None
    events_webhook_source: str = Field("task-api", min_length=1, max_length=255)
    events_webhook_timeout_seconds: float = Field(10.0, gt=0, le=300)
    events_webhook_max_backoff_seconds: float = Field(300.0, ge=1, le=86_400)

    @field_validator("better_auth_secret", mode="before")
    @classmethod
    def refuse_weak_secret(cls, secret: str | None) -> str | None:
        if secret is None or secret == "":
            return None
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"BETTER_AUTH_SECRET is {len(secret)} characters; it must be at least "
                f"{MIN_SECRET_LENGTH}. Use the same secret as your Better Auth server, or generate "
                "one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        if secret in KNOWN_PLACEHOLDER_SECRETS or len(set(secret)) < 8:
            raise ValueError("BETTER_AUTH_SECRET is a placeholder or repetitive value; set a random secret.")
        return secret

    @field_validator(
        "better_auth_url", "jwks_url", "jwt_issuer", "jwt_audience", "public_url", "metrics_token", "openai_api_key",
        mode="before",
    )
    @classmethod
    def blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if isinstance(value, str) else value

    @field_validator("openai_base_url", mode="before")
    @classmethod
    def require_model_url(cls, url: str | None) -> str | None:
        url = _http_url(
            url, "OPENAI_BASE_URL must be an http:// or https:// URL of a Chat Completions API, e.g. "
            "http://localhost:11434/v1 (Ollama) or https://generativelanguage.googleapis.com/v1beta/openai/ (Gemini).",
        )
        return url.rstrip("/") if url else None

    @field_validator("events_webhook_url", mode="before")
    @classmethod
    def require_http_url(cls, url: str | None) -> str | None:
        return _http_url(
            url, "EVENTS_WEBHOOK_URL must be an http:// or https:// URL, e.g. "
            "http://localhost:3500/v1.0/publish/pubsub/task-events (a Dapr sidecar).",
        )

    @field_validator("events_webhook_secret", mode="before")
    @classmethod
    def require_standard_webhooks_secret(cls, secret: str | None) -> str | None:
        if secret is None or not secret.strip():
            return None
        _webhook_key(secret)  # raises with a message that does not echo the secret
        return secret.strip()

    @model_validator(mode="after")
    def require_a_way_to_verify_tokens(self) -> "Settings":
        if self.better_auth_secret is None and self.jwks_endpoint is None:
            raise ValueError(
                "No way to verify tokens: set BETTER_AUTH_SECRET (shared secret, HS256) and/or "
                "BETTER_AUTH_URL or JWKS_URL (Better Auth's JWKS). `make run` writes a dev secret to .env."
            )
        return self

    @cached_property
    def jwks_endpoint(self) -> str | None:
        if self.jwks_url:
            return self.jwks_url
        if self.better_auth_url:
            return self.better_auth_url.rstrip("/") + "/api/auth/jwks"
        return None

    @cached_property
    def expected_issuers(self) -> list[str] | None:
        return _url_variants(self.jwt_issuer or self.better_auth_url)

    @cached_property
    def expected_audiences(self) -> list[str] | None:
        return _url_variants(self.jwt_audience or self.better_auth_url)

    @cached_property
    def events_webhook_key(self) -> bytes | None:
        """The HMAC key of Standard Webhooks signatures: the secret's base64 part, decoded."""
        return _webhook_key(self.events_webhook_secret.get_secret_value()) if self.events_webhook_secret else None

    @property
    def chat_configured(self) -> bool:
        return self.openai_api_key is not None or self.openai_base_url is not None

    @cached_property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


def _http_url(url: str | None, refusal: str) -> str | None:
    """An http(s) URL as given (trimmed), None when blank; `refusal` when it is not one."""
    url = (url or "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(refusal)
    return url


def _url_variants(value: str | None) -> list[str] | None:
    """Better Auth writes its base URL as configured; accept it with or without a trailing slash."""
    if not value:
        return None
    return list(dict.fromkeys([value, value.rstrip("/")]))


def _webhook_key(secret: str) -> bytes:
    encoded = secret.strip().removeprefix(WEBHOOK_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "EVENTS_WEBHOOK_SECRET must be a Standard Webhooks secret: `whsec_` followed by base64 "
            f"(the `whsec_` prefix is optional). {WEBHOOK_SECRET_HOW_TO}"
        ) from None
    if len(key) < WEBHOOK_SECRET_MIN_BYTES:
        raise ValueError(
            f"EVENTS_WEBHOOK_SECRET decodes to {len(key)} bytes; Standard Webhooks secrets are at least "
            f"{WEBHOOK_SECRET_MIN_BYTES}. {WEBHOOK_SECRET_HOW_TO}"
        )
    return key
