"""Configuration from the environment (prefix ``AVATAR_BFF_``) and an optional ``.env`` file."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SECRET_FILE_NAME = "secret_key"  # noqa: S105 - a file name
MIN_SECRET_LENGTH = 32


class SettingsError(Exception):
    """A setting is missing or invalid; the message is one line meant for an operator."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the service. Field names map to ``AVATAR_BFF_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="AVATAR_BFF_", env_file=".env", extra="ignore")

    environment: Literal["production", "dev"] = "production"
    demo: bool = False
    data_dir: Path = Path("data")
    database_url: str = ""
    # Several instances share rate limits, budgets and Socket.IO sessions through Redis; empty: one instance.
    redis_url: str = ""
    # Where this deployment's keys live in Redis: deployments sharing one Redis each need their own.
    redis_key_prefix: str = Field(default="avatar-bff:", min_length=1, max_length=64)
    # Behind the balancer: this instance's id, put in front of its Engine.IO session ids so the balancer can
    # send a long-polling session back to the instance that holds it (deploy/nginx). Empty: no prefix.
    instance_id: str = Field(default="", pattern=r"^[A-Za-z0-9]{0,16}$")
    # Addresses whose X-Forwarded-For/-Proto headers are believed (the balancer's, comma-separated; `*`: all).
    forwarded_allow_ips: str = "127.0.0.1"
    secret_key: SecretStr | None = None
    public_url: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json", ""] = ""  # empty: text in dev, JSON lines in production
    default_upstream: Literal["kaltura-us", "kaltura-eu", "simulator"] = "kaltura-us"
    simulator_url: str = "http://127.0.0.1:9100"
    allowed_upstream_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*.avatar.us.kaltura.ai", "*.avatar.eu.kaltura.ai"]
    )
    max_query_bytes: int = Field(default=8192, ge=256, le=65536)
    max_body_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    session_token_ttl_seconds: int = Field(default=2 * 3600, ge=60)
    relay_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=14)
    relay_max_payload_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024)
    relay_events_per_second: float = Field(default=50, gt=0)
    relay_max_per_flow: int = Field(default=50, ge=1)
    relay_max_total: int = Field(default=500, ge=1)
    # Conversations one client address may hold at once, relayed (Socket mode) and admitted (Iframe mode)
    # together, across every instance sharing state (Redis); a reconnect or Retry of one it holds is free:
    # one visitor cannot take a flow's or the relay's whole capacity. The name is older than the iframe cap.
    relay_max_per_address: int = Field(default=10, ge=1)
    whep_timeout_seconds: float = Field(default=10.0, gt=0)
    # Per conversation and per source (the page, the relay tap): bounds what one visitor can make us store.
    transcript_max_lines: int = Field(default=5000, ge=1)
    transcript_max_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024)
    # Page ingest per conversation: a token bucket of new lines (a retry of lines already stored is free).
    transcript_lines_per_second: float = Field(default=10, gt=0)
    transcript_line_burst: int = Field(default=1000, ge=500)  # at least one full batch
    # Page views per client address (a token bucket: this many per second, bursts of page_views_burst).
    page_views_per_second: float = Field(default=10, gt=0)
    page_views_burst: int = Field(default=100, ge=1)
    # How long a page view trusts a flow it read (0: read it on every view); an edit shows within this time.
    page_flow_cache_seconds: float = Field(default=2, ge=0, le=300)
    # After SIGTERM, how long requests and sockets still open may take before they are cancelled.
    shutdown_grace_seconds: int = Field(default=10, ge=1, le=300)
    # `serve` applies migrations before it listens; off when a deploy step runs `avatar-bff migrate` once.
    migrate_on_start: bool = True
    session_idle_seconds: int = Field(default=30 * 60, ge=60)
    # How often each instance re-reads budgets and kill switches and checks its live conversations.
    budget_check_seconds: float = Field(default=2.0, ge=0.1, le=60)
    # Admin console sessions end after this long unused, and this long after sign-in whatever happens.
    admin_idle_seconds: int = Field(default=60 * 60, ge=60)
    admin_session_seconds: int = Field(default=12 * 3600, ge=300)
    # Sign-in attempts: a token bucket per account and per client address (this many saved up, one back per
    # refill interval); past it, sign-in answers 429 until the bucket refills.
    sign_in_attempts_per_account: int = Field(default=5, ge=1)
    sign_in_attempts_per_address: int = Field(default=20, ge=1)
    sign_in_refill_seconds: float = Field(default=60, gt=0)
    housekeeping_interval_seconds: float = Field(default=300, gt=0)
    # A bearer token that opens GET /metrics (Prometheus); unset: /metrics answers 404.
    metrics_token: SecretStr | None = None

    @property
    def admin_idle(self) -> timedelta:
        return timedelta(seconds=self.admin_idle_seconds)

    @property
    def admin_lifetime(self) -> timedelta:
        return timedelta(seconds=self.admin_session_seconds)

    @field_validator("allowed_upstream_hosts", mode="before")
    @classmethod
    def _hosts_from_commas(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("public_url", "simulator_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("secret_key", "metrics_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
        return value

    @property
    def is_dev(self) -> bool:
        return self.environment == "dev" or self.demo

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("text" if self.is_dev else "json")

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'avatar-bff.db'}"

    @property
    def sdk_dir(self) -> Path:
        """Where `avatar-bff vendor-sdk` stores self-hosted SDK files."""
        return self.data_dir / "sdk"

    @property
    def secret(self) -> bytes:
        if self.secret_key is None:  # load_settings() always fills it in
            raise SettingsError("AVATAR_BFF_SECRET_KEY is not set")
        return self.secret_key.get_secret_value().encode()


def _persisted_dev_secret(data_dir: Path) -> SecretStr:
    """Reuse (or create) the dev secret under data_dir so restarts keep signed tokens valid."""
    path = data_dir / SECRET_FILE_NAME
    if path.exists():
        return SecretStr(path.read_text().strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(value)
    return SecretStr(value)


def load_settings(*, require_secret: bool = True, **overrides: object) -> Settings:
    """Read settings from the environment, apply overrides, and fill in the dev secret.

    Only what signs tokens (the server) needs the secret: commands that sign nothing pass
    `require_secret=False` and run in production without it (nor the public URL the server builds page
    URLs from). Raises SettingsError with a single
    human-readable line instead of a validation traceback.
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "_".join(str(part) for part in first["loc"]).upper()
        raise SettingsError(
            f"invalid setting AVATAR_BFF_{field}: {first['msg'].removeprefix('Value error, ')}"
        ) from None
    if settings.secret_key is None:
        if not settings.is_dev:
            if not require_secret:
                return settings
            raise SettingsError(
                "AVATAR_BFF_SECRET_KEY is required in production "
                f"(at least {MIN_SECRET_LENGTH} characters; set AVATAR_BFF_ENVIRONMENT=dev to generate one)"
            )
        settings.secret_key = _persisted_dev_secret(settings.data_dir)
    if require_secret and not settings.is_dev and not settings.public_url:
        # Page URLs and redirects are built from it, never from the client's Host header.
        raise SettingsError(
            "AVATAR_BFF_PUBLIC_URL is required in production "
            "(the address visitors use, e.g. https://avatars.example.com)"
        )
    return settings
