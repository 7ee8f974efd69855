"""A scripted stand-in for ktapd, for testing the client without the daemon.

It listens on a Unix socket in a background thread (its own trio loop),
greets each connection with a real sans-IO Connection(SERVER), then hands
the connection to a test's ``handler(peer)`` coroutine.  Everything the
client sent is recorded in ``received`` so tests can check the fields.
This is test scaffolding: it must not grow policy or session logic.
"""

from __future__ import annotations

import threading

import trio

from protocol import messages as msg
from protocol.bytecode.program import Function, Probe, Program
from protocol.connection import CLOSED_BY_PEER, NEED_DATA, SERVER, Connection


def tiny_program(probes: tuple[Probe, ...] = ()) -> Program:
    """A well-formed program; the fake daemon never runs it."""
    main = Function("main", 1, 1, (), (), (), (), (), 0)
    return Program(functions=(main,), probes=probes, source_name="t.kp")


class Peer:
    def __init__(self, stream: trio.SocketStream, log: list) -> None:
        self.stream = stream
        self.conn = Connection(SERVER)
        self.log = log

    async def receive(self):
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            if event is CLOSED_BY_PEER:
                return None
            self.log.append(event)
            return event

    async def send(self, message) -> None:
        await self.stream.send_all(self.conn.send(message))


class FakeDaemon:
    def __init__(self, path: str, handler) -> None:
        self.path = path
        self.handler = handler
        self.received: list = []
        self.errors: list[BaseException] = []
        self._ready = threading.Event()
        self._stop: trio.CancelScope | None = None
        self._token = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    def __enter__(self) -> FakeDaemon:
        self._thread.start()
        assert self._ready.wait(10), "fake daemon did not start"
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            self._token.run_sync_soon(self._stop.cancel)
        self._thread.join(10)

    async def _main(self) -> None:
        listeners = [trio.SocketListener(await _listen(self.path))]
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._stop:
            self._ready.set()
            await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        peer = Peer(stream, self.received)
        try:
            hello = await peer.receive()
            assert isinstance(hello, msg.Hello), hello
            await peer.send(peer.conn.hello_reply("fake-ktapd"))
            await self.handler(peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except BaseException as exc:  # surfaced by tests through .errors
            self.errors.append(exc)
            raise
        finally:
            await stream.aclose()


async def _listen(path: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(16)
    return sock
