"""The benchmark's PostgreSQL round-trip counter reads the server's framing correctly."""

from __future__ import annotations

import struct

from tests.benchmarks.pg_round_trips import ServerReplyParser


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", 4 + len(payload)) + payload


REPLY = (
    _message(b"1", b"")  # ParseComplete
    + _message(b"2", b"")  # BindComplete
    + _message(b"C", b"UPDATE 3\x00")  # CommandComplete
    + _message(b"Z", b"I")  # ReadyForQuery: the round trip is over
)


def test_counts_one_round_trip_per_ready_for_query() -> None:
    parser = ServerReplyParser()
    parser.feed(REPLY * 3)
    assert parser.ready_for_query == 3


def test_a_message_split_across_chunks_is_counted_once_whole() -> None:
    parser = ServerReplyParser()
    stream = REPLY * 2
    for i in range(len(stream)):  # one byte at a time: every boundary splits something
        parser.feed(stream[i : i + 1])
    assert parser.ready_for_query == 2


def test_a_z_byte_inside_a_payload_is_not_a_round_trip() -> None:
    parser = ServerReplyParser()
    parser.feed(_message(b"D", b"ZZZZ" * 10) + _message(b"C", b"SELECT 1\x00"))
    assert parser.ready_for_query == 0
