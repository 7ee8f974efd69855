"""Frames: a 4-byte big-endian length, then that many bytes of msgpack.

This module only cuts a byte stream into frames and wraps payloads into
frames; it knows nothing about messages or states (protocol/messages.py,
protocol/_state.py).  It does no I/O.

Why a length prefix and not msgpack's own streaming: the prefix lets the
receiver refuse an oversized frame *before* buffering it, and a truncated
frame is visible as such at end of stream.
"""

from __future__ import annotations

import struct

__all__ = ["HEADER", "MAX_FRAME", "FrameError", "FrameReader", "frame"]

HEADER = struct.Struct(">I")

# A `run` message carries a whole program, and programs may be 16 MiB
# (protocol/limits.py MAX_PROGRAM_BYTES); 64 KiB more leaves room for argv
# and the other fields.  Anything longer is refused before it is buffered.
MAX_FRAME = 16 * 1024 * 1024 + 64 * 1024


class FrameError(ValueError):
    """The byte stream cannot be cut into valid frames."""


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length."""
    if len(payload) > MAX_FRAME:
        raise FrameError(f"frame of {len(payload)} bytes is larger than the maximum {MAX_FRAME}")
    return HEADER.pack(len(payload)) + payload


class FrameReader:
    """Accumulates bytes and hands out whole frame payloads.

    ``feed(b"")`` marks the end of the stream; after it, a partial frame in
    the buffer is an error (truncated frame), an empty buffer is a clean end.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame
        self.eof = False

    def feed(self, data: bytes) -> None:
        if self.eof and data:
            raise FrameError("data after end of stream")
        if not data:
            self.eof = True
            return
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next whole payload, or None when more bytes are needed.

        Raises FrameError for an oversized length or a truncated last frame.
        """
        if len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self._max_frame:
                raise FrameError(
                    f"frame of {length} bytes is larger than the maximum {self._max_frame}"
                )
            end = HEADER.size + length
            if len(self._buffer) >= end:
                payload = bytes(self._buffer[HEADER.size : end])
                del self._buffer[:end]
                return payload
        if self.eof and self._buffer:
            raise FrameError(f"stream ended inside a frame ({len(self._buffer)} bytes left over)")
        return None

    @property
    def buffered(self) -> int:
        return len(self._buffer)
