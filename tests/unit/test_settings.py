"""Spec of the settings (DESIGN.md §6): defaults, parsing and one-line errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sender.settings import Settings, describe_error

DESIGN_DEFAULTS = {
    "amqp_url": "amqp://guest:guest@127.0.0.1:5672/",
    "redis_url": "redis://127.0.0.1:6379/0",
    "database_url": "postgresql://postgres@127.0.0.1:5432/postgres",
    "pages_queue": "campaign.pages",
    "inbox_api_url": "http://127.0.0.1:8080/inboxes/{inbox_id}/messages",
    "inbox_api_token": None,
    "dispatch_retry_count": 3,
    "dispatch_backoff_base_ms": 1000,
    "dispatch_backoff_cap_ms": 30000,
    "dispatch_backoff_jitter": "none",
    "dispatch_retryable_4xx": frozenset({408, 429}),
    "dispatch_timeout_ms": 10000,
    "http_transport": "aiohttp",
    "dispatch_concurrency": 200,
    "prefetch_pages": 4,
    "inbox_rate_per_sec": 20,
    "inbox_burst": 20,
    "rate_limit_max_wait_ms": 30000,
    "status_cache_ttl_ms": 5000,
    "abort_poll_ms": 1000,
    "claim_lease_ms": 120000,
    "page_deadline_s": 300,
    "page_delivery_limit": 20,
    "outcome_flush_ms": 50,
    "max_page_contacts": 1000,
    "max_page_bytes": 2097152,
    "metrics_port": 9108,
    "run_mode": "consumer",
    "log_format": "json",
    "log_level": "INFO",
    "shutdown_grace_s": 25,
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable of the developer's shell leaks into a test."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def _load() -> Settings:
    return Settings(_env_file=None)


def _error_line(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    """Set `name=value` and return the one line `sender` would print."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        _load()
    return describe_error(caught.value)


def test_defaults_equal_the_design_table() -> None:
    settings = _load()

    actual = {name: getattr(settings, name) for name in DESIGN_DEFAULTS}
    assert actual == DESIGN_DEFAULTS


def test_environment_overrides_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_BACKOFF_BASE_MS", "250")
    monkeypatch.setenv("INBOX_RATE_PER_SEC", "2.5")

    settings = _load()

    assert settings.dispatch_backoff_base_ms == 250
    assert settings.inbox_rate_per_sec == 2.5


def test_retry_count_zero_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_RETRY_COUNT", "0")

    assert _load().dispatch_retry_count == 0


def test_negative_retry_count_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _error_line(monkeypatch, "DISPATCH_RETRY_COUNT", "-1")

    assert line.startswith("invalid setting DISPATCH_RETRY_COUNT")


def test_empty_retryable_4xx_means_no_4xx_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_RETRYABLE_4XX", "")

    assert _load().dispatch_retryable_4xx == frozenset()


@pytest.mark.parametrize(
    ("value", "codes"),
    [
        ("408,429", {408, 429}),
        ("429", {429}),
        (" 408 , 429 ", {408, 429}),
        ("409,425,429", {409, 425, 429}),
    ],
)
def test_retryable_4xx_list_is_parsed(
    monkeypatch: pytest.MonkeyPatch, value: str, codes: set[int]
) -> None:
    monkeypatch.setenv("DISPATCH_RETRYABLE_4XX", value)

    assert _load().dispatch_retryable_4xx == frozenset(codes)


@pytest.mark.parametrize("value", ["500", "408,503", "200", "abc", "429;408", "4o8"])
def test_retryable_4xx_rejects_non_4xx_and_non_numbers(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    line = _error_line(monkeypatch, "DISPATCH_RETRYABLE_4XX", value)

    assert line.startswith("invalid setting DISPATCH_RETRYABLE_4XX")
    assert "\n" not in line


def test_inbox_api_url_accepts_a_url_with_the_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://api.example.test/v1/inboxes/{inbox_id}/send"
    monkeypatch.setenv("INBOX_API_URL", url)

    assert _load().inbox_api_url == url


def test_inbox_api_url_without_placeholder_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _error_line(monkeypatch, "INBOX_API_URL", "http://127.0.0.1:8080/messages")

    assert line.startswith("invalid setting INBOX_API_URL")
    assert "{inbox_id}" in line
    assert "\n" not in line


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_http_transport_accepts_aiohttp_and_httpx(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    monkeypatch.setenv("HTTP_TRANSPORT", transport)

    assert _load().http_transport == transport


@pytest.mark.parametrize("transport", ["requests", "", "urllib3", "aiohttp,httpx"])
def test_http_transport_rejects_anything_else(
    monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    line = _error_line(monkeypatch, "HTTP_TRANSPORT", transport)

    assert line.startswith("invalid setting HTTP_TRANSPORT")
    assert "\n" not in line


@pytest.mark.parametrize("jitter", ["none", "full", "equal"])
def test_backoff_jitter_modes(monkeypatch: pytest.MonkeyPatch, jitter: str) -> None:
    monkeypatch.setenv("DISPATCH_BACKOFF_JITTER", jitter)

    assert _load().dispatch_backoff_jitter == jitter


def test_unknown_backoff_jitter_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _error_line(monkeypatch, "DISPATCH_BACKOFF_JITTER", "half")

    assert line.startswith("invalid setting DISPATCH_BACKOFF_JITTER")


def test_inbox_api_token_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOX_API_TOKEN", "s3cret-token")

    settings = _load()

    assert settings.inbox_api_token is not None
    assert settings.inbox_api_token.get_secret_value() == "s3cret-token"
    assert "s3cret-token" not in repr(settings)
    assert "s3cret-token" not in str(settings)


@pytest.mark.parametrize("token", ["s3cret-token\n", "s3cret token", "s3cret\ttoken"])
def test_an_inbox_api_token_no_header_can_carry_is_rejected_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    line = _error_line(monkeypatch, "INBOX_API_TOKEN", token)

    assert line.startswith("invalid setting INBOX_API_TOKEN")
    assert "s3cret" not in line


def test_settings_are_frozen() -> None:
    settings = _load()

    with pytest.raises(ValidationError):
        settings.dispatch_retry_count = 9  # type: ignore[misc]


def test_describe_error_of_other_errors_is_one_line() -> None:
    assert describe_error(RuntimeError("boom")) == "invalid settings: boom"


# --- hostile or careless values: finite, bounded, no spinning, no leaked password ------------

SPINNING_OR_NONFINITE = {
    "INBOX_RATE_PER_SEC": ["inf", "-inf", "nan", "0", "-1", "1e7", "0.0001"],
    "INBOX_BURST": ["0", "1000001"],
    "RATE_LIMIT_MAX_WAIT_MS": ["0", "9999"],
    "PAGE_DEADLINE_S": ["0.001", "9.9", "nan", "inf"],
    "CLAIM_LEASE_MS": ["1", "9999"],
    "ABORT_POLL_MS": ["0", "1"],
    "OUTCOME_FLUSH_MS": ["0"],
    "STATUS_CACHE_TTL_MS": ["0"],
    "DISPATCH_TIMEOUT_MS": ["0", "1"],
    "SHUTDOWN_GRACE_S": ["nan", "inf", "-1"],
    "DISPATCH_BACKOFF_CAP_MS": ["999"],
    "MAX_PAGE_BYTES": ["1e400", "999999999999"],
}


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in SPINNING_OR_NONFINITE.items() for value in values],
)
def test_nonfinite_or_spinning_numbers_are_rejected_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    line = _error_line(monkeypatch, name, value)

    assert line.startswith(f"invalid setting {name}: ")
    assert "\n" not in line


def test_waits_deadlines_and_leases_equal_to_the_attempt_timeout_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "DISPATCH_TIMEOUT_MS": "500",
        "RATE_LIMIT_MAX_WAIT_MS": "500",
        "CLAIM_LEASE_MS": "500",
        "PAGE_DEADLINE_S": "0.5",
    }.items():
        monkeypatch.setenv(name, value)

    settings = _load()

    assert (settings.rate_limit_max_wait_ms, settings.claim_lease_ms) == (500, 500)
    assert settings.page_deadline_s == 0.5


def test_a_token_wait_shorter_than_an_attempt_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _error_line(monkeypatch, "RATE_LIMIT_MAX_WAIT_MS", "0")

    assert line == (
        "invalid setting RATE_LIMIT_MAX_WAIT_MS: must be at least DISPATCH_TIMEOUT_MS (10000 ms)"
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("htp://h/{inbox_id}", "http:// or https://"),
        ("ftp://h/{inbox_id}", "http:// or https://"),
        ("http://{inbox_id}.h/x", "fixed host"),
        ("http://h:{inbox_id}/x", "fixed host"),
        ("http://{inbox_id}@h/x", "fixed host"),
        ("http://h/x?inbox={inbox_id}", "not in the query"),
        ("http://h/x#{inbox_id}", "not in the query"),
        ("http:///{inbox_id}", "fixed host"),
    ],
)
def test_inbox_api_url_must_be_http_with_the_placeholder_in_its_path(
    monkeypatch: pytest.MonkeyPatch, url: str, why: str
) -> None:
    line = _error_line(monkeypatch, "INBOX_API_URL", url)

    assert line.startswith("invalid setting INBOX_API_URL: ")
    assert why in line


@pytest.mark.parametrize("name", ["AMQP_URL", "REDIS_URL", "DATABASE_URL"])
def test_url_settings_hide_their_password_in_repr_but_work_as_strings(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    url = "scheme://user:s3cr3t-pw@db.example.test:1234/x?y=1"
    monkeypatch.setenv(name, url)

    settings = _load()
    value = getattr(settings, name.lower())

    assert value == url
    assert str(value) == url
    assert f"{value}" == url
    assert "s3cr3t-pw" not in repr(settings)
    assert "s3cr3t-pw" not in str(settings)
    assert "user:***@db.example.test:1234" in repr(settings)
    assert settings.model_dump()[name.lower()] == url


@pytest.mark.parametrize("name", ["AMQP_URL", "REDIS_URL", "DATABASE_URL"])
def test_a_bad_url_setting_is_one_line_without_its_password(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    line = _error_line(monkeypatch, name, "scheme://user:s3cr3t-pw@host:notaport/")

    assert line.startswith(f"invalid setting {name}: ")
    assert "s3cr3t-pw" not in line
