"""Test helpers for code that speaks the protocol: ConnectionPair (h11 style).

A client and a server Connection wired together in memory.
Every message sent through the pair is checked twice: the sender's bytes
must parse back on the other side into an equal message.

This module must not do I/O.
"""

from __future__ import annotations

from protocol.connection import CLIENT, NEED_DATA, SERVER, Connection
from protocol.messages import Hello


class ConnectionPair:
    def __init__(self, greet: bool = True) -> None:
        self.client = Connection(CLIENT)
        self.server = Connection(SERVER)
        if greet:
            self.send(CLIENT, Hello(versions=(1,), client="test"))
            self.send(SERVER, self.server.hello_reply("testd"))

    def other(self, role: str) -> Connection:
        return self.server if role == CLIENT else self.client

    def send(self, role: str, message) -> object:
        """Send from ``role``; return what the other side received (asserted equal)."""
        sender = self.client if role == CLIENT else self.server
        data = sender.send(message)
        receiver = self.other(role)
        receiver.receive_data(data)
        got = receiver.next_event()
        if got != message:
            raise AssertionError(f"sent {message!r}, received {got!r}")
        if receiver.next_event() is not NEED_DATA:
            raise AssertionError("one message produced more than one event")
        return got
