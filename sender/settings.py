"""Settings: one pydantic-settings model read from the environment (and `.env`), no I/O."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AnyUrl, Field, GetCoreSchemaHandler, SecretStr, ValidationInfo, field_validator
from pydantic_core import core_schema
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

JitterMode = Literal["none", "full", "equal"]
HttpTransport = Literal["aiohttp", "httpx"]
RetryAfterScope = Literal["inbox", "contact"]

# Bounds of an inbox's rate, shared by INBOX_RATE_PER_SEC, `sender inbox set-rate` and the
# CHECKs of migration 004: below the minimum a token takes over 15 minutes; above the
# maximum the limiter would do nothing useful.
MIN_RATE_PER_SEC = 0.001
MAX_RATE_PER_SEC = 1_000_000.0
MAX_BURST = 1_000_000
_DAY_MS = 86_400_000
# DISPATCH_DEFERRED_SCHEDULE: at most this many rounds, each at most this long.
MAX_DEFERRED_ROUNDS = 50
MAX_DEFERRED_DELAY_S = 30 * 86_400.0
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
INBOX_ID_PLACEHOLDER = "{inbox_id}"


class SecretUrl(str):
    """A URL setting: used as the plain `str` it is, but its repr hides the password."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(_without_password(str(self)))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls._validate,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def _validate(cls, value: str) -> SecretUrl:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if not parts.scheme or not parts.hostname:
            raise ValueError("is not a valid URL (scheme://host/...)")
        return cls(value)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


def check_inbox_api_url(template: str) -> str:
    """`template` if it is http(s) with `{inbox_id}` in its path only, else `ValueError`."""
    if INBOX_ID_PLACEHOLDER not in template:
        raise ValueError("must contain the literal placeholder {inbox_id}")
    try:
        parts = urlsplit(template)
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname or INBOX_ID_PLACEHOLDER in parts.netloc:
        raise ValueError("must have a fixed host: {inbox_id} belongs in the path")
    if INBOX_ID_PLACEHOLDER in parts.query + parts.fragment:
        raise ValueError("must have {inbox_id} in its path, not in the query or fragment")
    try:
        AnyUrl(template.replace(INBOX_ID_PLACEHOLDER, "x"))
    except ValueError:
        raise ValueError("is not a valid URL") from None
    return template


class Settings(BaseSettings):
    """Every knob of DESIGN.md §6; names are the environment variables, units are in the names."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, allow_inf_nan=False
    )

    amqp_url: SecretUrl = SecretUrl("amqp://guest:guest@127.0.0.1:5672/")
    redis_url: SecretUrl = SecretUrl("redis://127.0.0.1:6379/0")
    database_url: SecretUrl = SecretUrl("postgresql://postgres@127.0.0.1:5432/postgres")
    pages_queue: str = Field("campaign.pages", min_length=1, max_length=200)
    inbox_api_url: str = "http://127.0.0.1:8080/inboxes/{inbox_id}/messages"
    inbox_api_token: SecretStr | None = None

    dispatch_retry_count: int = Field(3, ge=0, le=100)
    dispatch_backoff_base_ms: int = Field(1000, ge=0, le=_DAY_MS)
    dispatch_backoff_cap_ms: int = Field(30000, ge=0, le=_DAY_MS)
    dispatch_backoff_jitter: JitterMode = "none"
    dispatch_retryable_4xx: Annotated[frozenset[int], NoDecode] = frozenset({408, 429})
    dispatch_timeout_ms: int = Field(10000, ge=10, le=3_600_000)
    # Kept as written (`1m,5m,30m`); `deferred_schedule_s` is the parsed form.
    dispatch_deferred_schedule: str = ""
    http_transport: HttpTransport = "aiohttp"
    dispatch_concurrency: int = Field(200, ge=1, le=10000)
    prefetch_pages: int = Field(4, ge=1, le=1000)

    inbox_rate_per_sec: float = Field(20.0, ge=MIN_RATE_PER_SEC, le=MAX_RATE_PER_SEC)
    inbox_burst: int = Field(20, ge=1, le=MAX_BURST)
    # These three must each be at least DISPATCH_TIMEOUT_MS (checked below).
    rate_limit_max_wait_ms: int = Field(30000, le=_DAY_MS)
    claim_lease_ms: int = Field(120000, le=_DAY_MS)
    page_deadline_s: float = Field(300.0, le=86_400)
    status_cache_ttl_ms: int = Field(5000, ge=10, le=_DAY_MS)
    abort_poll_ms: int = Field(1000, ge=10, le=60_000)
    page_delivery_limit: int = Field(20, ge=1, le=1000)
    outcome_flush_ms: int = Field(50, ge=1, le=60_000)
    max_page_contacts: int = Field(1000, ge=1, le=100_000)
    max_page_bytes: int = Field(2 * 1024 * 1024, ge=1024, le=128 * 1024 * 1024)

    breaker_window_s: float = Field(10.0, ge=0.1, le=3600)
    breaker_min_attempts: int = Field(20, ge=0, le=1_000_000)
    breaker_failure_ratio: float = Field(0.5, gt=0, le=1)
    breaker_cooldown_s: float = Field(5.0, ge=0.05, le=86_400)
    breaker_cooldown_max_s: float = Field(60.0, ge=0.05, le=86_400)
    retry_after_scope: RetryAfterScope = "inbox"

    metrics_port: int = Field(9108, ge=0, le=65535)
    metrics_host: str = Field("0.0.0.0", min_length=1, max_length=253)
    run_mode: str = Field("consumer", min_length=1, max_length=64)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_grace_s: float = Field(25.0, ge=0, le=3600)
    auto_pause_window: int = Field(200, ge=0, le=100_000)
    auto_pause_failure_ratio: float = Field(0.5, gt=0, le=1)

    @property
    def deferred_schedule_s(self) -> tuple[float, ...]:
        """DISPATCH_DEFERRED_SCHEDULE in seconds, one entry per deferred round."""
        return parse_schedule(self.dispatch_deferred_schedule)

    @field_validator("dispatch_deferred_schedule")
    @classmethod
    def _schedule_parses(cls, value: str) -> str:
        parse_schedule(value)
        return value.strip()

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
        return check_inbox_api_url(value)

    @field_validator("dispatch_backoff_cap_ms")
    @classmethod
    def _cap_not_below_base(cls, value: int, info: ValidationInfo) -> int:
        base = info.data.get("dispatch_backoff_base_ms")
        if base is not None and value < base:
            raise ValueError(f"must be at least DISPATCH_BACKOFF_BASE_MS ({base})")
        return value

    @field_validator("breaker_cooldown_max_s")
    @classmethod
    def _cooldown_max_not_below_cooldown(cls, value: float, info: ValidationInfo) -> float:
        cooldown = info.data.get("breaker_cooldown_s")
        if cooldown is not None and value < cooldown:
            raise ValueError(f"must be at least BREAKER_COOLDOWN_S ({cooldown:g})")
        return value

    @field_validator("rate_limit_max_wait_ms", "claim_lease_ms", "page_deadline_s")
    @classmethod
    def _not_shorter_than_an_attempt(cls, value: float, info: ValidationInfo) -> float:
        # Shorter than one attempt spins: a token wait that always gives up, a page
        # republished before its first attempt ends, a lease lost mid-attempt.
        timeout_ms = info.data.get("dispatch_timeout_ms")
        value_ms = value * 1000 if info.field_name == "page_deadline_s" else value
        if timeout_ms is not None and value_ms < timeout_ms:
            raise ValueError(f"must be at least DISPATCH_TIMEOUT_MS ({timeout_ms} ms)")
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


def parse_schedule(text: str) -> tuple[float, ...]:
    """`1m,5m,30m,2h` -> (60.0, 300.0, 1800.0, 7200.0); empty -> (); else `ValueError`.

    Each entry is a positive number with a unit `s`, `m` or `h`, at most 30 days.
    """
    if not text.strip():
        return ()
    delays = tuple(_parse_duration(part.strip()) for part in text.split(","))
    if len(delays) > MAX_DEFERRED_ROUNDS:
        raise ValueError(f"at most {MAX_DEFERRED_ROUNDS} entries")
    return delays


def _parse_duration(part: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh])", part)
    if match is None:
        raise ValueError(f"{part!r} is not a duration like 30s, 5m or 2h")
    seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    if not 0 < seconds <= MAX_DEFERRED_DELAY_S:
        raise ValueError(f"{part!r} must be more than 0 and at most 720h")
    return seconds


def describe_error(error: Exception) -> str:
    """One line naming the first bad variable, for `sender` to print before exiting 2."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError) and error.errors():
        first = error.errors(include_url=False, include_input=False)[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ").splitlines()[0]
        return f"invalid setting {name}: {message}"
    return f"invalid settings: {error}"
