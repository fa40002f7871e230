"""raftd.wire.stream: framing at every split, bounded frames, garbage -> DecodeError only."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftd.wire.errors import DecodeError, FrameTooLarge
from raftd.wire.stream import NEED_DATA, StreamDecoder, encode_frame
from tests.unit.wire.strategies import msgpack_values

FRAMES: list[Any] = [
    {"type": "get", "key": "k", "id": 1},
    {"type": "append", "data": {"action": "change", "key": "k", "value": [1, 2.5, None]}},
    b"\x00" * 300,
    "é" * 40,
    [],
    {},
    None,
    2**64 - 1,
    -(2**63),
    True,
]
STREAM = b"".join(encode_frame(frame) for frame in FRAMES)


def drain(decoder: StreamDecoder) -> list[Any]:
    return list(decoder)


def test_one_feed_yields_every_frame() -> None:
    decoder = StreamDecoder(1024)
    decoder.feed(STREAM)
    assert drain(decoder) == FRAMES
    assert decoder.next() is NEED_DATA
    assert decoder.buffered == 0


def test_every_byte_split() -> None:
    for split in range(len(STREAM) + 1):
        decoder = StreamDecoder(1024)
        decoder.feed(STREAM[:split])
        got = drain(decoder)
        decoder.feed(STREAM[split:])
        got += drain(decoder)
        assert got == FRAMES, split


def test_every_two_splits() -> None:
    stream = STREAM[:120]  # three frames and part of a fourth: keeps the test quadratic but fast
    expected = [FRAMES[0], FRAMES[1]]
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1):
            decoder = StreamDecoder(1024)
            got: list[Any] = []
            for piece in (stream[:first], stream[first:second], stream[second:]):
                decoder.feed(piece)
                got += drain(decoder)
            assert got[:2] == expected, (first, second)


def test_byte_at_a_time() -> None:
    decoder = StreamDecoder(1024)
    got = []
    for i in range(len(STREAM)):
        decoder.feed(STREAM[i : i + 1])
        got += drain(decoder)
    assert got == FRAMES


def test_a_truncated_frame_stays_buffered() -> None:
    decoder = StreamDecoder(1024)
    frame = encode_frame(FRAMES[1])
    decoder.feed(frame[:-1])
    assert decoder.next() is NEED_DATA
    assert decoder.buffered == len(frame) - 1
    decoder.feed(frame[-1:])
    assert decoder.next() == FRAMES[1]
    assert decoder.buffered == 0


def test_many_small_frames_in_one_feed_larger_than_the_limit() -> None:
    frames = [{"n": i} for i in range(1000)]
    decoder = StreamDecoder(64)
    decoder.feed(b"".join(encode_frame(frame) for frame in frames))
    assert drain(decoder) == frames


def test_a_frame_of_exactly_the_limit_passes() -> None:
    frame = encode_frame(b"x" * 95)
    decoder = StreamDecoder(len(frame))
    decoder.feed(frame + frame)
    assert drain(decoder) == [b"x" * 95] * 2


def test_a_frame_one_byte_over_the_limit_is_too_large() -> None:
    frame = encode_frame(b"x" * 95)
    decoder = StreamDecoder(len(frame) - 1)
    decoder.feed(frame)
    with pytest.raises(FrameTooLarge):
        decoder.next()


@pytest.mark.parametrize(
    "data",
    [
        b"\xc6\xff\xff\xff\xff",  # bin32 announcing 4 GiB
        b"\xdd\xff\xff\xff\xff",  # array32 announcing 4G items
        b"\xdf\xff\xff\xff\xff",  # map32 announcing 4G pairs
    ],
)
def test_huge_headers_are_too_large(data: bytes) -> None:
    decoder = StreamDecoder(1000)
    decoder.feed(data)
    # The announced size may fail at once, or once the frame has grown past the limit.
    for _ in range(10):
        try:
            decoder.next()
        except FrameTooLarge:
            return
        decoder.feed(b"\x00" * 200)
    pytest.fail("FrameTooLarge was never raised")


def test_an_endless_array_streamed_through_a_small_buffer_is_too_large() -> None:
    # Completed array items leave msgpack's buffer, so only counting bytes per frame stops this.
    decoder = StreamDecoder(1000)
    decoder.feed(b"\xdc\x03\xe7")  # array16 of 999 items: within max_array_len
    with pytest.raises(FrameTooLarge):
        for _ in range(2000):
            decoder.feed(b"\x01")
            assert decoder.next() is NEED_DATA


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never-used byte
        b"\xa2\xff\xfe",  # invalid UTF-8
        b"\x81\x01\x02",  # int map key
        b"\x81\x90\x02",  # list map key
        b"\xd7\xff" + b"\x00" * 8,  # timestamp extension
        b"\xc7\x00\x05",  # empty extension
        b"\x91" * 10_000 + b"\xc0",  # deep nesting
    ],
)
def test_garbage_is_a_decode_error_and_sticks(data: bytes) -> None:
    decoder = StreamDecoder(1 << 20)
    decoder.feed(data)
    with pytest.raises(DecodeError) as first:
        decoder.next()
    assert not isinstance(first.value, FrameTooLarge)
    decoder.feed(encode_frame("fine"))
    with pytest.raises(DecodeError):
        decoder.next()


@given(msgpack_values)
def test_any_msgpack_value_round_trips(value: Any) -> None:
    decoder = StreamDecoder(1 << 16)
    decoder.feed(encode_frame(value) * 2)
    assert drain(decoder) == [value, value]


def consume(decoder: StreamDecoder, chunks: list[bytes]) -> None:
    """Feed ``chunks`` and drain; anything but DecodeError fails the test."""
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            drain(decoder)
    except DecodeError:
        pass


@given(st.lists(st.binary(max_size=64), max_size=8), st.integers(min_value=1, max_value=256))
def test_random_bytes_raise_only_decode_error(chunks: list[bytes], limit: int) -> None:
    consume(StreamDecoder(limit), chunks)


@given(st.lists(msgpack_values, min_size=1, max_size=5), st.data())
def test_truncated_and_split_streams_raise_only_decode_error(
    values: list[Any], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(value) for value in values)
    stream = stream[: data.draw(st.integers(min_value=0, max_value=len(stream)))]
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=4)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    consume(StreamDecoder(data.draw(st.integers(min_value=1, max_value=512))), chunks)


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StreamDecoder(0)
