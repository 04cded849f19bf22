"""Plain CSV blocks: the same rows, checks, messages and line numbers as `read_chunks`."""

from __future__ import annotations

import io
import random

import orjson
import pytest

from sender.core.contact_blocks import FastBlock, read_blocks
from sender.core.contacts_csv import ContactChunk, ContactRow, read_chunks
from sender.core.page import Contact
from sender.core.pagination import contact_parts, page_bodies, paginate
from sender.errors import InvalidContacts


def _blocks(text: str, block_bytes: int = 64, **limits: int) -> list[FastBlock | ContactChunk]:
    return list(read_blocks(io.BytesIO(text.encode()), "camp", block_bytes=block_bytes, **limits))


def _rows(chunks: list[FastBlock | ContactChunk]) -> list[ContactRow]:
    return [
        row
        for chunk in chunks
        for row in (chunk.as_chunk(None) if isinstance(chunk, FastBlock) else chunk).rows
    ]


def _csv_rows(text: str, **limits: int) -> list[ContactRow]:
    return [row for c in read_chunks(io.StringIO(text, newline=""), **limits) for row in c.rows]


def _outcome(read: object) -> object:
    try:
        return read()  # type: ignore[operator]
    except InvalidContacts as error:
        return str(error)


def test_plain_lines_become_copy_text_and_page_json_without_the_csv_module() -> None:
    text = "name,to,contact_id\nAna,+5511,c-1\nBo,+5512,c-2\n"

    [block] = _blocks(text, block_bytes=1 << 20)

    assert isinstance(block, FastBlock)
    assert block.copy_text == (
        b'camp\tc-1\t+5511\t{"name":"Ana"}\ncamp\tc-2\t+5512\t{"name":"Bo"}\n'
    )
    rows = _csv_rows(text)
    assert b"".join(block.parts) == b"".join(contact_parts([r[:3] for r in rows]))
    assert block.as_chunk(None).rows == rows


def test_a_file_without_variables_stores_an_empty_object() -> None:
    [block] = _blocks("contact_id,to\nc-1,+5511\n")

    assert isinstance(block, FastBlock)
    assert block.copy_text == b"camp\tc-1\t+5511\t{}\n"
    assert orjson.loads(b"".join(block.parts)[:-1])["variables"] == {}


def test_a_quoted_line_and_everything_after_it_go_through_the_csv_reader() -> None:
    plain = "".join(f"c-{i},+55{i},N{i}\n" for i in range(20))
    text = "contact_id,to,name\n" + plain + 'c-20,"+55,20",N\n' + "c-21,+5521,N\nc 22,+5522,N\n"

    blocks = read_blocks(io.BytesIO(text.encode()), "camp", block_bytes=64)

    assert isinstance(next(blocks), FastBlock)
    with pytest.raises(InvalidContacts) as refused:
        list(blocks)
    assert refused.value.problems == [
        "line 24: contact_id: must be 1-128 chars of [A-Za-z0-9_.:@-], not only dots"
    ]


def test_a_contact_id_twice_in_a_block_is_refused_while_reading_naming_both_lines() -> None:
    text = "contact_id,to\nc-1,+5511\nc-2,+5512\nc-1,+5513\n"

    with pytest.raises(InvalidContacts) as refused:
        _blocks(text, block_bytes=1 << 20)  # before anything of it could be stored

    assert refused.value.problems == ["line 4: duplicate contact_id c-1 (first on line 2)"]


def test_a_contact_too_large_for_a_page_is_refused_as_read_chunks_refuses_it() -> None:
    text = "contact_id,to,name\nc-1,+5511,A\nc-2,+5512," + "x" * 200 + "\n"
    size = len(orjson.dumps({"contact_id": "c-1", "to": "+5511", "variables": {"name": "A"}}))

    for limit in (size, size + 199, size + 200):
        fast = _outcome(lambda: _rows(_blocks(text, max_contact_bytes=limit)))  # noqa: B023
        assert fast == _outcome(lambda: _csv_rows(text, max_contact_bytes=limit))  # noqa: B023
    assert isinstance(
        _blocks(text, block_bytes=1 << 20, max_contact_bytes=size + 200)[0], FastBlock
    )


def test_text_that_is_not_utf8_fails_as_the_csv_reader_fails() -> None:
    stream = io.BytesIO(b"contact_id,to\nc-1,+55\xff\n")

    with pytest.raises(UnicodeDecodeError):
        list(read_blocks(stream, "camp"))


def _random_csv(rng: random.Random) -> str:
    header = rng.choice(
        ["contact_id,to,name", "to,contact_id", "contact_id,to,a,b", "\ufeffcontact_id,to"]
    )
    width = header.count(",") + 1
    pieces = ["a", "b-1", "c:2", "..", "", "x y", '"q,1"', "é", "+55", "c-1", "\t", "\\"]
    lines = [header]
    for n in range(rng.randrange(0, 40)):
        # unique values: ids stored by another block are the primary key's to refuse
        fields = [p + (str(n) if p != ".." else "") for p in rng.choices(pieces, k=width)]
        if rng.random() < 0.1:
            fields = fields[: rng.randrange(width + 2)]
        lines.append(",".join(fields))
    return "\n".join(lines) + rng.choice(["\n", "", "\n\n"])


def test_any_file_reads_the_same_as_with_read_chunks() -> None:
    rng = random.Random(15)
    for _ in range(2000):
        text = _random_csv(rng)
        expected = _outcome(lambda: _csv_rows(text.removeprefix("\ufeff")))  # noqa: B023
        for block_bytes in (8, 64, 1 << 20):
            got = _outcome(lambda: _rows(_blocks(text, block_bytes)))  # noqa: B023
            assert got == expected, (text, block_bytes)


def test_page_bodies_from_parts_are_paginate_s_pages_byte_for_byte() -> None:
    contacts = [
        Contact(contact_id=f"c-{i}", to=f"+55{i}", variables={"n": "v" * i}) for i in range(9)
    ]
    parts = contact_parts([(c.contact_id, c.to, c.variables) for c in contacts])
    message = {"text": "hi"}

    for max_bytes in (2_000, 400, 250):
        expected = [
            p.to_json()
            for p in paginate("camp", "inbox", message, contacts, page_size=4, max_bytes=max_bytes)
        ]
        got = page_bodies(
            "camp", "inbox", message, parts, 1, first_page=0, page_size=4, max_bytes=max_bytes
        )
        assert [orjson.loads(b) for b in got] == [orjson.loads(b) for b in expected]
        assert got == expected
