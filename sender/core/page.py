"""The page message of DESIGN.md §2: schema and decoding (pure, no I/O).

Decoding is total: whatever a body holds, `decode_page` returns a `Page` or raises
`InvalidPage` with a bounded dead-letter reason; nothing else escapes it.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from sender.errors import InvalidId, InvalidPage

# `campaign_id` has no `:`, so the Idempotency-Key `<campaign_id>:<contact_id>` is unambiguous.
CAMPAIGN_ID_PATTERN = r"^[A-Za-z0-9_.@-]{1,128}$"
ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
MAX_MESSAGE_DEPTH = 32
MAX_REASON_CHARS = 200
_LOC_PART_CHARS = 40

IdKind = Literal["campaign id", "inbox id", "contact id"]
_ID_RES: dict[IdKind, re.Pattern[str]] = {
    "campaign id": re.compile(CAMPAIGN_ID_PATTERN),
    "inbox id": re.compile(ID_PATTERN),
    "contact id": re.compile(ID_PATTERN),
}
# Removed from reasons: controls, format characters (bidi overrides), surrogates, line breaks.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _not_only_dots(value: str) -> str:
    # `.` and `..` are path segments: an inbox id made of them would leave the inbox's path.
    if not value.strip("."):
        raise ValueError("must not be made only of dots")
    return value


CampaignId = Annotated[
    str, StringConstraints(pattern=CAMPAIGN_ID_PATTERN), AfterValidator(_not_only_dots)
]
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN), AfterValidator(_not_only_dots)]
# PostgreSQL text cannot hold NUL, so a NUL would crash the ledger on every delivery.
_NO_NUL = r"^[^\x00]*$"
Address = Annotated[str, StringConstraints(min_length=1, max_length=320, pattern=_NO_NUL)]
Text = Annotated[str, StringConstraints(pattern=_NO_NUL)]


def is_valid_id(kind: IdKind, value: str) -> bool:
    """Whether `value` is a contract id of this kind."""
    return bool(_ID_RES[kind].fullmatch(value)) and bool(value.strip("."))


def validate_id(kind: IdKind, value: str) -> str:
    """Return `value` if it is a contract id of this kind, else raise `InvalidId`."""
    if not is_valid_id(kind, value):
        raise InvalidId(kind, value)
    return value


def bounded_reason(reason: str) -> str:
    """A dead-letter reason fit for an AMQP header and a log line: printable, ≤ 200 chars."""
    text = "".join(ch for ch in reason if unicodedata.category(ch) not in _UNPRINTABLE)
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3] + "..."
    return text


def nesting_depth_exceeds(value: object, limit: int) -> bool:
    """True if a JSON value nests deeper than `limit` containers (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _has_nul(value: object) -> bool:
    """True if any string (key or value) in a JSON value holds a NUL (iterative)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class Contact(BaseModel):
    """One recipient of a page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contact_id: Id
    to: Address
    variables: dict[Text, Text] = Field(default_factory=dict)


class Page(BaseModel):
    """A batch of contacts of one campaign, all sent through one inbox."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    campaign_id: CampaignId
    page: int = Field(ge=0, strict=True)
    inbox_id: Id
    message: dict[str, Any]
    contacts: list[Contact] = Field(min_length=1)

    @field_validator("message")
    @classmethod
    def _message_storable(cls, message: dict[str, Any]) -> dict[str, Any]:
        if nesting_depth_exceeds(message, MAX_MESSAGE_DEPTH):
            raise ValueError(f"nested deeper than {MAX_MESSAGE_DEPTH} levels")
        if _has_nul(message):
            raise ValueError("must not contain NUL characters")
        try:
            orjson.dumps(message)
        except orjson.JSONEncodeError:
            raise ValueError("cannot be serialized as JSON") from None
        return message

    @model_validator(mode="after")
    def _unique_contact_ids(self) -> Page:
        seen: set[str] = set()
        for contact in self.contacts:
            if contact.contact_id in seen:
                raise ValueError(f"duplicate contact_id {contact.contact_id}")
            seen.add(contact.contact_id)
        return self

    def with_contacts(self, contacts: list[Contact]) -> Page:
        """The same page carrying only `contacts` (a continuation page), validated."""
        return Page.model_validate({**self.model_dump(exclude={"contacts"}), "contacts": contacts})

    def to_json(self) -> bytes:
        """The wire form, as publishers send it."""
        return orjson.dumps(self.model_dump(mode="json"))


def decode_page(body: bytes, *, max_bytes: int, max_contacts: int) -> Page:
    """Parse and validate a page, raising `InvalidPage` with the dead-letter reason.

    Total: any exception caused by what the body holds becomes `InvalidPage`.
    """
    try:
        return _decode(body, max_bytes=max_bytes, max_contacts=max_contacts)
    except InvalidPage as invalid:
        raise InvalidPage(bounded_reason(invalid.reason)) from None
    except Exception as error:  # a page must never crash its consumer
        raise InvalidPage(f"invalid_page: cannot decode ({type(error).__name__})") from None


def _decode(body: bytes, *, max_bytes: int, max_contacts: int) -> Page:
    if len(body) > max_bytes:
        raise InvalidPage("too_large")
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        # orjson refuses more than 1024 levels: valid JSON, but an invalid page.
        if "depth limit" in str(error):
            raise InvalidPage(
                f"invalid_page: page: nested deeper than {MAX_MESSAGE_DEPTH} levels"
            ) from None
        raise InvalidPage("malformed_json") from None
    fields = raw if isinstance(raw, dict) else {}
    contacts = fields.get("contacts")
    if isinstance(contacts, list) and len(contacts) > max_contacts:
        raise InvalidPage("too_large")
    # Before pydantic sees it: its errors and our validators must never meet a deep value.
    if nesting_depth_exceeds(fields.get("message"), MAX_MESSAGE_DEPTH):
        raise InvalidPage(f"invalid_page: message: nested deeper than {MAX_MESSAGE_DEPTH} levels")
    if nesting_depth_exceeds(raw, MAX_MESSAGE_DEPTH + 1):
        raise InvalidPage(f"invalid_page: page: nested deeper than {MAX_MESSAGE_DEPTH} levels")
    try:
        return Page.model_validate(raw)
    except ValidationError as error:
        raise InvalidPage(f"invalid_page: {_first_error(error)}") from None


def _first_error(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False, include_context=False)[0]
    where = ".".join(_short(str(part)) for part in first["loc"]) or "page"
    return bounded_reason(f"{where}: {first['msg']}")


def _short(part: str) -> str:
    """A location part (an unknown key may be 100 KB long) cut to a readable length."""
    return part if len(part) <= _LOC_PART_CHARS else part[: _LOC_PART_CHARS - 3] + "..."
