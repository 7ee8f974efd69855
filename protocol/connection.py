"""A sans-IO protocol endpoint: bytes in, messages out; messages in, bytes out.

``Connection(role)`` is what ktapctl (role CLIENT) and ktapd (role SERVER)
wrap around their sockets.  It frames (protocol/framing.py), encodes and
checks messages (protocol/messages.py), enforces the state table
(protocol/_state.py) in both directions and negotiates the version.  It
never touches a socket, a clock or a thread: the caller moves the bytes.

Errors, converted once (h11): everything inside raises
``LocalProtocolError``; ``next_event`` turns what it finds in the peer's
bytes into ``RemoteProtocolError``.  Either moves the connection to CLOSED.
A server that catches RemoteProtocolError may still ``send`` one fatal
ErrorMessage (that is how the client learns why), then closes the socket.

Usage::

    conn = Connection(SERVER)
    conn.receive_data(sock.recv(65536))      # b"" at end of stream
    while (event := conn.next_event()) is not NEED_DATA:
        if event is CLOSED_BY_PEER: ...
        handle(event)
    sock.sendall(conn.send(Started(session=1, probes=3)))

This module must not do I/O.
"""

from __future__ import annotations

import msgpack

from protocol import _state
from protocol._state import CLIENT, CLOSED, SERVER
from protocol.framing import MAX_FRAME, FrameError, FrameReader, frame
from protocol.messages import (
    PROTOCOL_VERSIONS,
    SPEC_BY_CLASS,
    ErrorMessage,
    Hello,
    Message,
    MessageError,
    ServerHello,
    from_wire,
    to_wire,
)

__all__ = [
    "CLIENT",
    "CLOSED_BY_PEER",
    "NEED_DATA",
    "SERVER",
    "Connection",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")  # next_event: feed more bytes first
CLOSED_BY_PEER = _Sentinel("CLOSED_BY_PEER")  # next_event: the peer ended the stream cleanly


class ProtocolError(Exception):
    """The conversation broke the protocol; the connection is unusable."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class Connection:
    """One end of a ktap protocol connection.

    Args:
        role: CLIENT or SERVER.
        versions: protocol versions we speak (the server picks the highest
            common one; tests use this to simulate other versions).
        max_frame: largest frame accepted from the peer.
    """

    def __init__(
        self, role: str, versions: tuple[int, ...] = PROTOCOL_VERSIONS, max_frame: int = MAX_FRAME
    ) -> None:
        if role not in (CLIENT, SERVER):
            raise ValueError(f"role must be CLIENT or SERVER, not {role!r}")
        self.role = role
        self.peer = SERVER if role == CLIENT else CLIENT
        self.versions = tuple(versions)
        self.state = _state.NEW
        self.version: int | None = None  # negotiated, after the hellos
        self.peer_name = ""
        self._offered: tuple[int, ...] = ()  # versions still possible after the client hello
        self._reader = FrameReader(max_frame)

    # --- receiving ----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the peer; ``b""`` means the peer closed its end."""
        try:
            self._reader.feed(data)
        except FrameError as exc:
            self.state = CLOSED
            raise RemoteProtocolError(str(exc)) from None

    def next_event(self) -> Message | _Sentinel:
        """The next message from the peer, NEED_DATA, or CLOSED_BY_PEER.

        Like ``next()`` on an iterator, this consumes what it returns and
        moves the connection's state.

        Raises:
            RemoteProtocolError: the peer's bytes are malformed, truncated,
                oversized, not a valid message, or not allowed now.
        """
        if self.state == CLOSED:
            # After a fatal error or a protocol error only the end of the
            # stream may follow.
            if self._reader.buffered:
                raise RemoteProtocolError("data after the connection closed")
            return CLOSED_BY_PEER if self._reader.eof else NEED_DATA
        try:
            payload = self._reader.next_frame()
            if payload is None:
                if self._reader.eof:
                    self.state = CLOSED
                    return CLOSED_BY_PEER
                return NEED_DATA
            message = self._decode(payload)
            self._advance(self.peer, message)
            return message
        except (FrameError, MessageError, LocalProtocolError) as exc:
            self.state = CLOSED
            raise RemoteProtocolError(str(exc)) from None

    def _decode(self, payload: bytes) -> Message:
        try:
            doc = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
        except Exception as exc:  # msgpack raises many types; one error leaves here
            raise MessageError(
                f"frame is not a msgpack document: {type(exc).__name__}: {exc}"
            ) from None
        return from_wire(doc, self.peer)

    # --- sending ------------------------------------------------------------

    def send(self, message: Message) -> bytes:
        """The bytes to write for ``message``; moves the state.

        Raises:
            LocalProtocolError: ``message`` is not allowed in this state or
                does not fit in a frame.
        """
        if self.state == CLOSED and not (
            self.role == SERVER and isinstance(message, ErrorMessage) and message.fatal
        ):
            raise LocalProtocolError("connection is closed")
        try:
            doc = to_wire(message)
            payload = msgpack.packb(doc, use_bin_type=True)
            data = frame(payload)
        except (MessageError, FrameError, TypeError, ValueError) as exc:
            raise LocalProtocolError(f"cannot send {type(message).__name__}: {exc}") from None
        if self.state != CLOSED:
            try:
                self._advance(self.role, message)
            except LocalProtocolError:
                self.state = CLOSED
                raise
        return data

    # --- the state machine --------------------------------------------------

    def _advance(self, sender: str, message: Message) -> None:
        tag = to_wire_tag(message)
        if isinstance(message, ErrorMessage):
            key = _state.transition_key(tag, message.fatal, message.of)
        else:
            key = tag
        new = _state.next_state(sender, self.state, key)
        if new is None:
            raise LocalProtocolError(f"{sender} may not send {tag!r} in state {self.state}")
        self._negotiate(sender, message)
        self.state = new

    def _negotiate(self, sender: str, message: Message) -> None:
        """Version negotiation (KTAP_CMD_IOC_VERSION): the client's hello
        offers versions, the server's hello picks one of those both speak."""
        if isinstance(message, Hello):
            if sender == self.role:  # our own hello: what we offer
                self._offered = tuple(message.versions)
                return
            self._offered = tuple(sorted(set(message.versions) & set(self.versions)))
            self.peer_name = message.client
            if not self._offered:
                raise LocalProtocolError(
                    f"no common protocol version: client speaks {list(message.versions)}, "
                    f"server speaks {list(self.versions)}"
                )
        elif isinstance(message, ServerHello):
            if message.version not in self._offered:
                raise LocalProtocolError(
                    f"server chose protocol version {message.version}, not one of {list(self._offered)}"
                )
            self.version = message.version
            if sender == self.peer:
                self.peer_name = message.server

    def hello_reply(self, server: str) -> ServerHello:
        """The ServerHello answering the client's hello (server role): the
        highest version both sides speak."""
        offered = self._offered
        if not offered:
            raise LocalProtocolError("no client hello to answer")
        return ServerHello(version=max(offered), server=server)


def to_wire_tag(message: Message) -> str:
    return SPEC_BY_CLASS[type(message)].tag
