"""Spec of the page message (DESIGN.md §2): what decodes, and the dead-letter reason of what not."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from sender.core import page as page_module
from sender.core.page import (
    MAX_MESSAGE_DEPTH,
    Contact,
    Page,
    bounded_reason,
    decode_page,
    nesting_depth_exceeds,
    validate_id,
)
from sender.errors import InvalidId, InvalidPage

MAX_BYTES = 2 * 1024 * 1024
MAX_CONTACTS = 1000
PHONE = "+5511999990001"

EXAMPLE: dict[str, Any] = {
    "campaign_id": "spring-sale",
    "page": 3,
    "inbox_id": "inbox-42",
    "message": {"text": "Hi {{name}}, 20% off today"},
    "contacts": [{"contact_id": "c-0001", "to": PHONE, "variables": {"name": "Ana"}}],
}


def _page(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(EXAMPLE)
    raw.update(changes)
    return raw


def _contact(**changes: Any) -> dict[str, Any]:
    contact: dict[str, Any] = copy.deepcopy(EXAMPLE["contacts"][0])
    contact.update(changes)
    return contact


def _decode(raw: object, *, max_bytes: int = MAX_BYTES, max_contacts: int = MAX_CONTACTS) -> Page:
    body = raw if isinstance(raw, bytes) else orjson.dumps(raw)
    return decode_page(body, max_bytes=max_bytes, max_contacts=max_contacts)


def _reason(raw: object, **limits: int) -> str:
    with pytest.raises(InvalidPage) as caught:
        _decode(raw, **limits)
    return caught.value.reason


def _without(key: str) -> dict[str, Any]:
    raw = _page()
    del raw[key]
    return raw


# --- what decodes ----------------------------------------------------------------------------


def test_design_example_decodes() -> None:
    page = _decode(EXAMPLE)

    assert page.campaign_id == "spring-sale"
    assert page.page == 3
    assert page.inbox_id == "inbox-42"
    assert page.message == {"text": "Hi {{name}}, 20% off today"}
    assert page.contacts == [
        Contact(contact_id="c-0001", to=PHONE, variables={"name": "Ana"}),
    ]


def test_variables_are_optional() -> None:
    page = _decode(_page(contacts=[{"contact_id": "c-1", "to": PHONE}]))

    assert page.contacts[0].variables == {}


def test_page_zero_and_limits_at_the_edge_are_accepted() -> None:
    raw = _page(
        page=0,
        campaign_id="c" * 128,
        contacts=[_contact(contact_id=f"c-{i}", to="x" * 320) for i in range(3)],
    )

    page = _decode(raw, max_bytes=len(orjson.dumps(raw)), max_contacts=3)

    assert page.page == 0
    assert len(page.contacts) == 3


def test_message_is_forwarded_opaque() -> None:
    message = {"template": "promo", "nested": {"list": [1, 2.5, None, True]}}

    assert _decode(_page(message=message)).message == message


# --- what is dead-lettered -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"", b"{", b"not json", b"\xff\xfe", b'{"campaign_id": "x",}', b"{'a': 1}"]
)
def test_non_json_is_malformed_json(body: bytes) -> None:
    assert _reason(body) == "malformed_json"


def test_body_over_max_bytes_is_too_large() -> None:
    body = orjson.dumps(EXAMPLE)

    assert _reason(body, max_bytes=len(body) - 1) == "too_large"


def test_oversize_garbage_is_too_large_not_malformed() -> None:
    assert _reason(b"x" * 5000, max_bytes=4096) == "too_large"


def test_more_than_max_contacts_is_too_large() -> None:
    raw = _page(contacts=[_contact(contact_id=f"c-{i}") for i in range(3)])

    assert _reason(raw, max_contacts=2) == "too_large"


INVALID_PAGES: dict[str, Callable[[], object]] = {
    "missing campaign_id": lambda: _without("campaign_id"),
    "missing inbox_id": lambda: _without("inbox_id"),
    "missing page": lambda: _without("page"),
    "missing message": lambda: _without("message"),
    "missing contacts": lambda: _without("contacts"),
    "missing contact_id": lambda: _page(contacts=[{"to": PHONE}]),
    "missing to": lambda: _page(contacts=[{"contact_id": "c-1"}]),
    "not an object": lambda: [EXAMPLE],
    "null": lambda: None,
    "space in campaign_id": lambda: _page(campaign_id="spring sale"),
    "slash in inbox_id": lambda: _page(inbox_id="inbox/42"),
    "braces in inbox_id": lambda: _page(inbox_id="{inbox_id}"),
    "non-ascii campaign_id": lambda: _page(campaign_id="promoção"),
    "newline after campaign_id": lambda: _page(campaign_id="spring-sale\n"),
    "empty campaign_id": lambda: _page(campaign_id=""),
    "campaign_id of 129 chars": lambda: _page(campaign_id="c" * 129),
    "contact_id of 129 chars": lambda: _page(contacts=[_contact(contact_id="c" * 129)]),
    "bad contact_id": lambda: _page(contacts=[_contact(contact_id="c 1")]),
    "numeric campaign_id": lambda: _page(campaign_id=42),
    "negative page": lambda: _page(page=-1),
    "fractional page": lambda: _page(page=1.5),
    "message not an object": lambda: _page(message="hello"),
    "empty contacts": lambda: _page(contacts=[]),
    "contacts not a list": lambda: _page(contacts={"c-1": PHONE}),
    "duplicate contact_id": lambda: _page(contacts=[_contact(), _contact(to="+5511000000000")]),
    "unknown page field": lambda: _page(priority="high"),
    "unknown contact field": lambda: _page(contacts=[_contact(phone=PHONE)]),
    "empty to": lambda: _page(contacts=[_contact(to="")]),
    "to over 320 chars": lambda: _page(contacts=[_contact(to="x" * 321)]),
    "to not a string": lambda: _page(contacts=[_contact(to=5511999990001)]),
    "variable not a string": lambda: _page(contacts=[_contact(variables={"age": 31})]),
    "variables not an object": lambda: _page(contacts=[_contact(variables=["Ana"])]),
}


@pytest.mark.parametrize("make_raw", INVALID_PAGES.values(), ids=INVALID_PAGES.keys())
def test_schema_invalid_page_is_invalid_page_with_its_first_error(
    make_raw: Callable[[], object],
) -> None:
    reason = _reason(make_raw())

    assert reason.startswith("invalid_page: ")
    assert "\n" not in reason


def test_invalid_page_reason_names_the_field() -> None:
    assert _reason(_without("campaign_id")) == "invalid_page: campaign_id: Field required"
    assert _reason(_page(contacts=[_contact(to="x" * 321)])).startswith(
        "invalid_page: contacts.0.to: "
    )


def test_duplicate_contact_id_reason_names_the_duplicate() -> None:
    reason = _reason(_page(contacts=[_contact(), _contact()]))

    assert reason.startswith("invalid_page: ")
    assert "duplicate contact_id c-0001" in reason


BAD_CONTACTS_WITH_A_PHONE: dict[str, dict[str, Any]] = {
    "bad contact_id": _contact(contact_id="c 1"),
    "unknown field": _contact(extra="y"),
    "variable not a string": _contact(variables={"n": 1}),
    "to too long": _contact(to=PHONE * 25),
    "to is a number": _contact(to=int(PHONE[1:])),
    "variables not an object": _contact(variables=PHONE),
}


@pytest.mark.parametrize(
    "contact", BAD_CONTACTS_WITH_A_PHONE.values(), ids=BAD_CONTACTS_WITH_A_PHONE.keys()
)
def test_reasons_never_contain_the_phone_number(contact: dict[str, Any]) -> None:
    reason = _reason(_page(contacts=[_contact(contact_id="c-0"), contact]))

    assert reason.startswith("invalid_page: ")
    assert PHONE not in reason
    assert PHONE[1:] not in reason


# --- validate_id -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["a", "Z", "0", "spring-sale", "inbox_42", "a.b:c@d-e_f", "x" * 128]
)
def test_validate_id_accepts_contract_ids(value: str) -> None:
    assert validate_id("inbox id", value) == value


@pytest.mark.parametrize("value", ["spring-sale", "a.b@d-e_f", "...a", "a..b", "x" * 128])
def test_validate_id_accepts_campaign_ids(value: str) -> None:
    assert validate_id("campaign id", value) == value


@pytest.mark.parametrize(
    "value",
    [
        *("", "x" * 129, "a b", "a/b", "a?b", "a%2Fb", "{inbox_id}", "ü", "a\n", "\na", "a\x00"),
        *("*", ".", "..", "...", "%2e%2e", "a/../b"),
    ],
)
@pytest.mark.parametrize("kind", ["campaign id", "inbox id", "contact id"])
def test_validate_id_rejects_everything_else(kind: page_module.IdKind, value: str) -> None:
    with pytest.raises(InvalidId) as caught:
        validate_id(kind, value)

    assert caught.value.kind == kind
    assert caught.value.value == value
    assert str(caught.value).startswith(f"invalid {kind}: ")


def test_a_campaign_id_may_not_hold_a_colon_but_inbox_and_contact_ids_may() -> None:
    with pytest.raises(InvalidId):
        validate_id("campaign id", "a:b")

    assert validate_id("inbox id", "a:b") == "a:b"
    assert validate_id("contact id", "a:b") == "a:b"
    assert _reason(_page(campaign_id="a:b")).startswith("invalid_page: campaign_id: ")
    assert _decode(_page(inbox_id="i:1", contacts=[_contact(contact_id="c:1")])).inbox_id == "i:1"


@pytest.mark.parametrize("dots", [".", "..", "...."])
def test_ids_made_only_of_dots_are_invalid_pages(dots: str) -> None:
    assert _reason(_page(campaign_id=dots)).startswith("invalid_page: campaign_id: ")
    assert _reason(_page(inbox_id=dots)).startswith("invalid_page: inbox_id: ")
    assert _reason(_page(contacts=[_contact(contact_id=dots)])).startswith(
        "invalid_page: contacts.0.contact_id: "
    )


# --- continuation pages and the wire form ----------------------------------------------------


def test_with_contacts_keeps_everything_but_the_contacts() -> None:
    raw = _page(contacts=[_contact(contact_id=f"c-{i}") for i in range(3)])
    page = _decode(raw)

    continuation = page.with_contacts(page.contacts[1:])

    assert [c.contact_id for c in continuation.contacts] == ["c-1", "c-2"]
    assert continuation.model_dump(exclude={"contacts"}) == page.model_dump(exclude={"contacts"})
    assert len(page.contacts) == 3


def test_to_json_round_trips() -> None:
    page = _decode(EXAMPLE)

    assert _decode(page.to_json()) == page
    assert orjson.loads(page.to_json()) == EXAMPLE


def test_continuation_page_round_trips() -> None:
    raw = _page(contacts=[_contact(contact_id=f"c-{i}") for i in range(3)])
    continuation = _decode(raw).with_contacts([Contact(contact_id="c-2", to=PHONE)])

    decoded = _decode(continuation.to_json())

    assert decoded == continuation
    assert decoded.contacts == [Contact(contact_id="c-2", to=PHONE, variables={})]


# --- hostile pages: decoding is total and reasons are bounded --------------------------------


def _nested(depth: int) -> dict[str, Any]:
    """A JSON object `depth` levels deep (built without recursion)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_message_nested_32_levels_decodes() -> None:
    message = _nested(MAX_MESSAGE_DEPTH)

    assert _decode(_page(message=message)).message == message


def _nested_json(depth: int) -> bytes:
    """The JSON text of `_nested(depth)` (orjson.dumps refuses past 254 levels)."""
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def _with(raw: dict[str, Any], placeholder: str, json_text: bytes) -> bytes:
    return orjson.dumps(raw).replace(orjson.dumps(placeholder), json_text)


@pytest.mark.parametrize("depth", [MAX_MESSAGE_DEPTH + 1, 300, 600, 1000])
def test_message_nested_deeper_than_32_levels_is_invalid(depth: int) -> None:
    body = _with(_page(message="@M"), "@M", _nested_json(depth))

    assert _reason(body) == "invalid_page: message: nested deeper than 32 levels"


def test_a_page_deeper_than_orjson_parses_is_invalid_not_a_crash() -> None:
    body = b'{"message": ' + b"[" * 5000 + b"]" * 5000 + b"}"

    assert _reason(body) == "invalid_page: page: nested deeper than 32 levels"


def test_deep_nesting_outside_the_message_is_invalid() -> None:
    body = _with(_page(contacts=[_contact(variables="@V")]), "@V", _nested_json(600))

    assert _reason(body) == "invalid_page: page: nested deeper than 32 levels"


def test_page_true_is_invalid() -> None:
    assert _reason(_page(page=True)).startswith("invalid_page: page: ")


def test_a_huge_unknown_key_gives_a_short_reason() -> None:
    reason = _reason(_page(**{"k" * 100_000: 1}))

    assert reason.startswith("invalid_page: kkk")
    assert len(reason) <= 200


def test_a_message_that_cannot_be_reserialized_is_invalid() -> None:
    # Validated directly: orjson.loads never yields such a value, a publisher's object may.
    with pytest.raises(ValueError, match="cannot be serialized as JSON"):
        Page.model_validate(_page(message={"when": object()}))


def test_any_unexpected_exception_while_decoding_is_an_invalid_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def explode(_: object) -> Page:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(Page, "model_validate", explode)

    assert _reason(EXAMPLE) == "invalid_page: cannot decode (RecursionError)"


def test_crlf_in_to_is_a_valid_address() -> None:
    page = _decode(_page(contacts=[_contact(to="+5511\r\nX-Evil: 1")]))

    assert page.contacts[0].to == "+5511\r\nX-Evil: 1"


@pytest.mark.parametrize(
    ("raw", "bounded"),
    [
        ("invalid_page: x", "invalid_page: x"),
        ("a\r\nb\x00c\x1bd\u2028e\u202ef", "abcdef"),
        ("r" * 500, "r" * 197 + "..."),
        ("", ""),
    ],
)
def test_bounded_reason_removes_control_characters_and_cuts_at_200(raw: str, bounded: str) -> None:
    assert bounded_reason(raw) == bounded
    assert len(bounded_reason(raw)) <= 200


def test_reason_of_a_key_with_control_characters_has_none() -> None:
    reason = _reason(_page(**{"bad\r\nkey\x1b[31m": 1}))

    assert "\r" not in reason
    assert "\n" not in reason
    assert "\x1b" not in reason


def test_nesting_depth_check_is_iterative() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]

    assert nesting_depth_exceeds(deep, 32)
    assert not nesting_depth_exceeds(_nested(32), 32)
    assert nesting_depth_exceeds(_nested(33), 32)
    assert not nesting_depth_exceeds("text", 0)
