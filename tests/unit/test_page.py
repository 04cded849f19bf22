"""Spec of the page message (DESIGN.md §2): what decodes, and the dead-letter reason of what not."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from sender.core.page import Contact, Page, decode_page, validate_id
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
    assert validate_id("campaign_id", value) == value


@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "a b", "a/b", "a?b", "a%2Fb", "{inbox_id}", "ü", "a\n", "\na", "a\x00", "*"],
)
def test_validate_id_rejects_everything_else(value: str) -> None:
    with pytest.raises(InvalidId) as caught:
        validate_id("inbox_id", value)

    assert caught.value.kind == "inbox_id"
    assert caught.value.value == value
    assert str(caught.value).startswith("invalid inbox_id")


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
