"""Framing of a byte stream (a TCP connection) into msgpack objects, with a bounded buffer.

msgpack is self-delimiting, so a frame is simply one msgpack object. ``StreamDecoder`` is sans-IO
(h11 style): the transport ``feed``s whatever bytes arrived, then calls ``next()`` until it
returns ``NEED_DATA``.

Bounding memory: ``msgpack.Unpacker(max_buffer_size=...)`` alone does not bound a frame,
because the unpacker moves completed sub-objects (array items, map values) out of its buffer
into Python objects while the frame is still incomplete; a peer could stream an endless array
through a small buffer. So the decoder counts the bytes fed since the current frame began and
refuses (``FrameTooLarge``) a frame that would grow past ``max_frame_bytes``. Bytes beyond that
stay in a local queue until the frames before them are parsed, so one large ``feed`` holding
many small frames is fine.

Decoded objects use only plain types: str (valid UTF-8), bytes, int, float, bool, None, lists,
and maps whose keys are str or bytes (other key types are refused: integer keys would let a
client force hash collisions). msgpack extension types (timestamps included) are refused.
After any ``DecodeError`` the decoder is broken: every later ``next()`` raises it again, and the
caller should close the connection.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal

import msgpack

from raftd.wire.errors import DecodeError, FrameTooLarge

__all__ = ["NEED_DATA", "DecodeError", "FrameTooLarge", "StreamDecoder", "encode_frame",
           "frame_encoder"]


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


_SIZE_LIMITS = re.compile(r"exceeds max_(str|bin|array|map)_len")

NEED_DATA: Final = _Sentinel.NEED_DATA
"""Returned by ``StreamDecoder.next()`` when no complete frame is buffered."""


def encode_frame(obj: Any) -> bytes:
    """Encode one frame; raises ``TypeError``, ``ValueError`` or ``OverflowError`` for values
    msgpack cannot carry (a set, a cycle, an int beyond 64 bits)."""
    frame: bytes = msgpack.packb(obj, use_bin_type=True)
    return frame


def frame_encoder() -> Callable[[Any], bytes]:
    """``encode_frame`` for one owner on one thread, twice as fast for small frames: it keeps
    its msgpack Packer, which ``packb`` builds anew per call (a Packer is not thread-safe)."""
    encode: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack
    return encode


def _refuse_extension(code: int, data: bytes) -> object:
    raise ValueError(f"msgpack extension type {code} is not allowed")


class StreamDecoder:
    def __init__(self, max_frame_bytes: int) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self._max = max_frame_bytes
        # The unpacker's own limits (str/bin/array/map lengths) default to max_buffer_size, so a
        # header announcing a larger container fails at once instead of after buffering.
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=True,
            max_buffer_size=max_frame_bytes,
            max_ext_len=0,  # timestamps skip ext_hook, but not this limit
            ext_hook=_refuse_extension,  # empty extensions pass the limit
        )
        self._queued = bytearray()  # fed by the caller, not yet handed to the unpacker
        self._fed = 0  # bytes handed to the unpacker so far
        self._frame_start = 0  # stream offset where the current (incomplete) frame begins
        self._error: DecodeError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames (non-zero at EOF: a truncated frame)."""
        return self._fed - self._frame_start + len(self._queued)

    def feed(self, data: bytes) -> None:
        if not self._queued and self._fed - self._frame_start + len(data) <= self._max:
            # The common case (whole frames within the bound): straight to the unpacker,
            # without a copy through the queue.
            self._unpacker.feed(data)
            self._fed += len(data)
        else:
            self._queued += data

    def next(self) -> Any | Literal[_Sentinel.NEED_DATA]:
        """Return the next decoded object, or ``NEED_DATA``; raises ``DecodeError``."""
        if self._error is not None:
            raise self._error
        while True:
            # Only try when the unpacker holds unparsed bytes: OutOfData is an exception, and
            # raising one per request would cost more than the parse itself.
            if self._unpacker.tell() == self._fed:
                obj = NEED_DATA
            else:
                try:
                    obj = self._unpacker.unpack()
                except msgpack.OutOfData:
                    obj = NEED_DATA
                except Exception as exc:
                    # Garbage raises ValueError, StackError, UnicodeDecodeError...; the set is
                    # not documented as closed. Only the message tells an oversized header apart.
                    text = str(exc)
                    kind = FrameTooLarge if _SIZE_LIMITS.search(text) else DecodeError
                    self._error = kind(f"invalid frame: {text or type(exc).__name__}")
                    raise self._error from exc
            if obj is not NEED_DATA:
                self._frame_start = self._unpacker.tell()
                return obj
            if not self._queued:
                return NEED_DATA
            room = self._max - (self._fed - self._frame_start)
            if room <= 0:
                self._error = FrameTooLarge(f"frame exceeds {self._max} bytes")
                raise self._error
            chunk = bytes(self._queued[:room])
            del self._queued[:room]
            self._unpacker.feed(chunk)
            self._fed += len(chunk)

    def __iter__(self) -> Iterator[Any]:
        """Yield every complete frame buffered so far (stops at ``NEED_DATA``)."""
        while (obj := self.next()) is not NEED_DATA:
            yield obj
