"""The page message of DESIGN.md §2: schema and decoding (pure, no I/O)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from sender.errors import InvalidId, InvalidPage

ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
_ID_RE = re.compile(ID_PATTERN)

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
# PostgreSQL text cannot hold NUL, so a NUL would crash the ledger on every delivery.
_NO_NUL = r"^[^\x00]*$"
Address = Annotated[str, StringConstraints(min_length=1, max_length=320, pattern=_NO_NUL)]
Text = Annotated[str, StringConstraints(pattern=_NO_NUL)]


def validate_id(kind: str, value: str) -> str:
    """Return `value` if it is a contract id, else raise `InvalidId`."""
    if not _ID_RE.fullmatch(value):
        raise InvalidId(kind, value)
    return value


class Contact(BaseModel):
    """One recipient of a page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contact_id: Id
    to: Address
    variables: dict[Text, Text] = Field(default_factory=dict)


class Page(BaseModel):
    """A batch of contacts of one campaign, all sent through one inbox."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    campaign_id: Id
    page: int = Field(ge=0, strict=True)
    inbox_id: Id
    message: dict[str, Any]
    contacts: list[Contact] = Field(min_length=1)

    @field_validator("message")
    @classmethod
    def _message_storable(cls, message: dict[str, Any]) -> dict[str, Any]:
        if _has_nul(message):
            raise ValueError("must not contain NUL characters")
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


def _has_nul(value: object) -> bool:
    """True if any string (key or value) in a JSON value holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def decode_page(body: bytes, *, max_bytes: int, max_contacts: int) -> Page:
    """Parse and validate a page, raising `InvalidPage` with the dead-letter reason."""
    if len(body) > max_bytes:
        raise InvalidPage("too_large")
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidPage("malformed_json") from None
    contacts = raw.get("contacts") if isinstance(raw, dict) else None
    if isinstance(contacts, list) and len(contacts) > max_contacts:
        raise InvalidPage("too_large")
    try:
        return Page.model_validate(raw)
    except ValidationError as error:
        raise InvalidPage(f"invalid_page: {_first_error(error)}") from None


def _first_error(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "page"
    return f"{where}: {first['msg']}"
