"""raftd.wire.peer: round trips, the exact format, and hostile input (only DecodeError)."""

from __future__ import annotations

import contextlib
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftd.core.messages import (
    TAGS,
    Message,
    MsgApp,
    MsgAppResp,
    MsgVote,
)
from raftd.core.state import Entry, EntryType
from raftd.wire.errors import DecodeError
from raftd.wire.peer import FORMAT_VERSION, decode_peer, encode_peer
from tests.unit.wire.strategies import messages, messages_of, msgpack_values

NODE_A = "127.0.0.1:7001"
NODE_B = "127.0.0.1:7002"


def sample_app() -> MsgApp:
    return MsgApp(
        term=3,
        src=NODE_A,
        dst=NODE_B,
        prev_log_index=4,
        prev_log_term=2,
        entries=(Entry(2, 5, EntryType.NORMAL, b"x"), Entry(3, 6, EntryType.CONF_CHANGE, b"")),
        leader_commit=4,
    )


def as_map(msg: Message) -> dict[str, Any]:
    decoded: dict[str, Any] = msgpack.unpackb(encode_peer(msg))
    return decoded


def mangled(fields: dict[str, Any]) -> bytes:
    return typing.cast(bytes, msgpack.packb(fields, use_bin_type=True))


def assert_rejected(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_peer(data)


@pytest.mark.parametrize("cls", list(TAGS), ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_every_class_round_trips(cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(messages_of(cls))
    decoded = decode_peer(encode_peer(msg))
    assert decoded == msg
    assert type(decoded) is cls


def test_entries_keep_their_enum_type() -> None:
    decoded = decode_peer(encode_peer(sample_app()))
    assert isinstance(decoded, MsgApp)
    assert [type(e.type) for e in decoded.entries] == [EntryType, EntryType]


def test_format_is_a_versioned_map_with_compact_entries() -> None:
    assert as_map(sample_app()) == {
        "v": FORMAT_VERSION,
        "type": "app",
        "term": 3,
        "src": NODE_A,
        "dst": NODE_B,
        "prev_log_index": 4,
        "prev_log_term": 2,
        "entries": [[2, 5, 0, b"x"], [3, 6, 1, b""]],
        "leader_commit": 4,
        "notice": False,
    }


def test_fields_with_defaults_may_be_omitted() -> None:
    fields = as_map(MsgAppResp(term=1, src=NODE_A, dst=NODE_B, index=7, reject=True))
    del fields["reject_hint"], fields["log_term"]
    assert decode_peer(mangled(fields)) == MsgAppResp(
        term=1, src=NODE_A, dst=NODE_B, index=7, reject=True
    )


def test_local_message_classes_cannot_be_encoded() -> None:
    class Local(Message):
        pass

    with pytest.raises(KeyError):
        encode_peer(Local(term=1, src=NODE_A, dst=NODE_B))


VOTE = MsgVote(term=5, src=NODE_A, dst=NODE_B, last_log_index=9, last_log_term=4)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("v", 2),
        ("v", True),  # True == 1 in Python, but it is not the version
        ("v", "1"),
        ("type", "nope"),
        ("type", ["vote"]),  # unhashable
        ("term", True),
        ("term", -1),
        ("term", 2**63),
        ("term", 1.0),
        ("term", None),
        ("src", ""),
        ("src", "x" * 256),
        ("src", b"127.0.0.1:7001"),
        ("last_log_index", "9"),
        ("transfer", 1),
        ("bogus", 1),
    ],
)
def test_wrong_fields_are_refused(field: str, value: Any) -> None:
    fields = as_map(VOTE)
    fields[field] = value
    assert_rejected(mangled(fields))


@pytest.mark.parametrize("field", ["v", "type", "term", "src", "dst", "last_log_index"])
def test_missing_fields_are_refused(field: str) -> None:
    fields = as_map(VOTE)
    del fields[field]
    assert_rejected(mangled(fields))


def test_a_bytes_key_is_an_unknown_field() -> None:
    fields: dict[Any, Any] = as_map(VOTE)
    fields[b"term"] = fields.pop("term")
    assert_rejected(mangled(fields))


@pytest.mark.parametrize(
    "entries",
    [
        "not a list",
        [[2, 5, 0]],  # three items
        [[2, 5, 0, b"x", 1]],  # five items
        [(2, 5, 0, "x")],  # data as str
        [[2, 5, 2, b"x"]],  # unknown entry type
        [[2, 5, True, b"x"]],  # bool as entry type
        [[-1, 5, 0, b"x"]],
        [[2, 2**63, 0, b"x"]],
        [[2, 6, 0, b"x"]],  # gap after prev_log_index 4
        [[2, 5, 0, b"x"], [2, 7, 0, b"y"]],  # gap between entries
        [[3, 5, 0, b"x"], [2, 6, 0, b"y"]],  # terms going back
        [[1, 5, 0, b"x"]],  # below prev_log_term
        [[4, 5, 0, b"x"]],  # beyond the message term
    ],
)
def test_bad_entries_are_refused(entries: Any) -> None:
    fields = as_map(sample_app())
    fields["entries"] = entries
    assert_rejected(mangled(fields))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\x91" * 100_000 + b"\xc0",  # deep nesting
        b"\xdb\xff\xff\xff\xff",  # str32 announcing 4 GiB
        b"\xdd\xff\xff\xff\xff",  # array32 announcing 4G items
        b"\xdf\xff\xff\xff\xff",  # map32 announcing 4G pairs
        b"\xd7\xff" + b"\x00" * 8,  # a timestamp extension
        b"\xc7\x00\x05",  # an empty extension
        b"\xa2\xff\xfe",  # invalid UTF-8
        b"\x81\x01\x02",  # int map key
        b"\xc0",
        b"\x90",
        encode_peer(VOTE) + b"\x00",  # trailing bytes
    ],
)
def test_garbage_is_refused(data: bytes) -> None:
    assert_rejected(data)


def test_every_truncation_is_refused() -> None:
    data = encode_peer(sample_app())
    for end in range(len(data)):
        assert_rejected(data[:end])


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_peer(data)


@given(msgpack_values)
def test_random_msgpack_objects_raise_only_decode_error(obj: Any) -> None:
    with contextlib.suppress(DecodeError):
        decode_peer(mangled(obj))


@given(msg=messages, value=msgpack_values, data=st.data())
def test_any_field_replaced_by_anything(msg: Message, value: Any, data: st.DataObject) -> None:
    fields = as_map(msg)
    fields[data.draw(st.sampled_from(sorted(fields)))] = value
    try:
        decoded = decode_peer(mangled(fields))
    except DecodeError:
        return
    assert type(decoded) in TAGS


@given(msg=messages, data=st.data())
def test_flipped_bytes_raise_only_decode_error(msg: Message, data: st.DataObject) -> None:
    encoded = bytearray(encode_peer(msg))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        encoded[at] = data.draw(st.integers(min_value=0, max_value=255))
    with contextlib.suppress(DecodeError):
        decode_peer(bytes(encoded))

