"""Errors raised by the wire codecs.

Everything a peer or client sends is untrusted: the codecs turn any malformed input into a
``DecodeError`` (or a subclass) so callers can drop it, count it and log it once, never crash.
"""

from __future__ import annotations

import reprlib


class DecodeError(Exception):
    """The bytes or the decoded object do not form a valid message."""


class FrameTooLarge(DecodeError):
    """A stream frame (one msgpack object) would exceed the decoder's ``max_frame_bytes``."""


class BadRequest(DecodeError):
    """A client request is malformed; ``message`` names the offending field.

    ``id`` is the request's ``id`` when it could be read, so the error response can echo it and
    a pipelining client can match it to its request.
    """

    def __init__(self, message: str, *, id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.id = id


class FieldTooLarge(BadRequest):
    """A request field exceeds a size limit (a key over ``MAX_KEY_BYTES``): ``too_large``."""


_REPR = reprlib.Repr()
_REPR.maxlevel = 3  # NB: plain repr() of a value nested 1000 deep raises RecursionError
_REPR.maxstring = _REPR.maxother = 60


def short_repr(value: object) -> str:
    """repr() bounded for error messages: hostile input may carry megabytes, or nest deep."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
