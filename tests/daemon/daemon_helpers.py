"""Helpers for daemon tests: a raw protocol client and script compilation.

The client speaks through a real protocol Connection over a real Unix
socket, so these tests cover the daemon's whole I/O shell.
"""

from __future__ import annotations

import trio

from ktapctl.lang import compile_source
from protocol.bytecode.encoding import encode
from protocol.connection import CLIENT, CLOSED_BY_PEER, NEED_DATA, Connection
from protocol.messages import Hello, Output, Run, ServerHello

TIMEOUT_S = 30


def program(source: str) -> bytes:
    return encode(compile_source(source, "test.kp"))


def run_message(source: str, **options) -> Run:
    return Run(program=program(source), argv=("test.kp",), **options)


class RawClient:
    """A greeted protocol connection to a daemon under test."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = Connection(CLIENT)

    @classmethod
    async def connect(cls, path: str, greet: bool = True) -> RawClient:
        client = cls(await trio.open_unix_socket(path))
        if greet:
            await client.send(Hello(versions=(1,), client="test"))
            hello = await client.receive()
            assert isinstance(hello, ServerHello), hello
        return client

    async def send(self, message) -> None:
        await self.stream.send_all(self.conn.send(message))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self):
        """The next message (or CLOSED_BY_PEER)."""
        with trio.fail_after(TIMEOUT_S):
            while True:
                event = self.conn.next_event()
                if event is not NEED_DATA:
                    return event
                self.conn.receive_data(await self.stream.receive_some(65536))

    async def until(self, kind) -> list:
        """Messages up to and including the first of type ``kind``."""
        got = []
        while True:
            message = await self.receive()
            got.append(message)
            if isinstance(message, kind) or message is CLOSED_BY_PEER:
                return got

    async def aclose(self) -> None:
        await self.stream.aclose()


def records_of(messages: list) -> list:
    return [r for m in messages if isinstance(m, Output) for r in m.records]


def text_of(messages: list) -> str:
    return "".join(
        getattr(r, "text", "") for r in records_of(messages) if type(r).__name__ == "Text"
    )
