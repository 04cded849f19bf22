"""The page never picks the inbox API's host or path (DESIGN.md §3): ids that would escape."""

from __future__ import annotations

import httpx
import pytest

from sender.adapters.inbox_dispatcher import inbox_url, keeps_prefix
from sender.core.page import validate_id
from sender.errors import InvalidId

TEMPLATE = "http://127.0.0.1:8080/inboxes/{inbox_id}/messages"
ESCAPING = ["..", ".", "...", "a/../b", "../messages", "%2e%2e", "%2F", "a?x=1", "a#f", "", " "]


@pytest.mark.parametrize("inbox_id", ESCAPING)
def test_ids_that_would_escape_are_refused_by_the_validator(inbox_id: str) -> None:
    with pytest.raises(InvalidId):
        validate_id("inbox id", inbox_id)


@pytest.mark.parametrize("inbox_id", ESCAPING)
def test_the_url_builder_keeps_every_id_inside_one_path_segment(inbox_id: str) -> None:
    try:
        url = inbox_url(TEMPLATE, inbox_id)
    except InvalidId:
        return  # refused outright: nothing is sent
    segments = url.raw_path.split(b"/")
    assert (url.scheme, url.host, url.port) == ("http", "127.0.0.1", 8080)
    assert segments[:2] == [b"", b"inboxes"]
    assert segments[3:] == [b"messages"]
    assert url.query == b""
    assert url.fragment == ""


@pytest.mark.parametrize("dots", [".", ".."])
def test_the_url_builder_refuses_dot_segments_outright(dots: str) -> None:
    with pytest.raises(InvalidId):
        inbox_url(TEMPLATE, dots)


@pytest.mark.parametrize(
    ("inbox_id", "path"),
    [
        ("@evil", "/inboxes/%40evil/messages"),
        (":80", "/inboxes/%3A80/messages"),
        ("evil.example:80@x", "/inboxes/evil.example%3A80%40x/messages"),
        ("a..b", "/inboxes/a..b/messages"),
        ("..a", "/inboxes/..a/messages"),
        ("inbox-42", "/inboxes/inbox-42/messages"),
    ],
)
def test_valid_ids_stay_inside_the_path_and_keep_the_host(inbox_id: str, path: str) -> None:
    url = inbox_url(TEMPLATE, inbox_id)

    assert (url.scheme, url.host, url.port) == ("http", "127.0.0.1", 8080)
    assert url.raw_path.decode() == path
    assert url.query == b""


def test_a_template_with_a_path_prefix_and_https_keeps_both() -> None:
    url = inbox_url("https://api.example.test/v1/{inbox_id}", "@evil")

    assert str(url) == "https://api.example.test/v1/%40evil"


@pytest.mark.parametrize(
    "resolved",
    [
        "http://127.0.0.1:8080/messages",  # `..` resolved by the URL parser
        "http://127.0.0.1:8080/inboxes/messages",  # `.` resolved
        "http://evil:8080/inboxes/x/messages",
        "http://127.0.0.1:80/inboxes/x/messages",
        "https://127.0.0.1:8080/inboxes/x/messages",
    ],
)
def test_a_built_url_that_left_the_prefix_is_detected(resolved: str) -> None:
    assert not keeps_prefix(TEMPLATE, httpx.URL(resolved), "x")


def test_a_built_url_inside_the_prefix_passes_the_check() -> None:
    assert keeps_prefix(TEMPLATE, httpx.URL("http://127.0.0.1:8080/inboxes/x/messages"), "x")
