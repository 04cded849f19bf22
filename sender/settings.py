"""Settings: one pydantic-settings model read from the environment (and `.env`), no I/O."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AnyUrl, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

JitterMode = Literal["none", "full", "equal"]
HttpTransport = Literal["aiohttp", "httpx"]


class Settings(BaseSettings):
    """Every knob of DESIGN.md §6; names are the environment variables, units are in the names."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    pages_queue: str = Field("campaign.pages", min_length=1, max_length=200)
    inbox_api_url: str = "http://127.0.0.1:8080/inboxes/{inbox_id}/messages"
    inbox_api_token: SecretStr | None = None

    dispatch_retry_count: int = Field(3, ge=0, le=100)
    dispatch_backoff_base_ms: int = Field(1000, ge=0)
    dispatch_backoff_cap_ms: int = Field(30000, ge=0)
    dispatch_backoff_jitter: JitterMode = "none"
    dispatch_retryable_4xx: Annotated[frozenset[int], NoDecode] = frozenset({408, 429})
    dispatch_timeout_ms: int = Field(10000, gt=0)
    http_transport: HttpTransport = "aiohttp"
    dispatch_concurrency: int = Field(200, ge=1, le=10000)
    prefetch_pages: int = Field(4, ge=1, le=1000)

    inbox_rate_per_sec: float = Field(20.0, gt=0)
    inbox_burst: int = Field(20, ge=1)
    rate_limit_max_wait_ms: int = Field(30000, ge=0)
    status_cache_ttl_ms: int = Field(5000, ge=0)
    abort_poll_ms: int = Field(1000, gt=0)
    claim_lease_ms: int = Field(120000, gt=0)
    page_deadline_s: float = Field(300.0, gt=0)
    page_delivery_limit: int = Field(20, ge=1)
    outcome_flush_ms: int = Field(50, gt=0)
    max_page_contacts: int = Field(1000, ge=1)
    max_page_bytes: int = Field(2 * 1024 * 1024, ge=1024)

    metrics_port: int = Field(9108, ge=0, le=65535)
    metrics_host: str = Field("0.0.0.0", min_length=1, max_length=253)
    run_mode: str = Field("consumer", min_length=1, max_length=64)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_grace_s: float = Field(25.0, ge=0)

    @field_validator("dispatch_retryable_4xx", mode="before")
    @classmethod
    def _parse_codes(cls, value: object) -> object:
        """Accept `408,429` (and the empty string, meaning no retryable 4xx)."""
        if isinstance(value, str):
            return frozenset(int(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("dispatch_retryable_4xx")
    @classmethod
    def _only_4xx(cls, value: frozenset[int]) -> frozenset[int]:
        bad = sorted(code for code in value if not 400 <= code <= 499)
        if bad:
            raise ValueError(f"not 4xx status codes: {bad}")
        return value

    @field_validator("inbox_api_url")
    @classmethod
    def _url_has_inbox_slot(cls, value: str) -> str:
        if "{inbox_id}" not in value:
            raise ValueError("must contain the literal placeholder {inbox_id}")
        AnyUrl(value.replace("{inbox_id}", "x"))
        return value

    @field_validator("inbox_api_token")
    @classmethod
    def _token_fits_a_header(cls, value: SecretStr | None) -> SecretStr | None:
        # A token read from a file often ends in a newline, which no HTTP header may hold.
        if value is not None and any(
            ord(char) < 0x21 or ord(char) == 0x7F for char in value.get_secret_value()
        ):
            raise ValueError("must not contain spaces or control characters (a trailing newline?)")
        return value

    @field_validator("amqp_url", "redis_url", "database_url")
    @classmethod
    def _is_url(cls, value: str) -> str:
        AnyUrl(value)
        return value


def describe_error(error: Exception) -> str:
    """One line naming the first bad variable, for `sender` to print before exiting 2."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError) and error.errors():
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        return f"invalid setting {name}: {first['msg']}"
    return f"invalid settings: {error}"
