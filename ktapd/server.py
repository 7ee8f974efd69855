"""The daemon's I/O shell: the Unix socket, one task per client, the session table.

``Daemon.serve(listener)`` accepts connections on a listening Unix socket
(bound by ``bind_socket``, or handed over by systemd).  Each client gets a
``Client`` task that pumps bytes through a sans-IO protocol Connection
(protocol/connection.py) and answers each message with one handler from
``Client.HANDLERS``.  Sessions (ktapd/session.py) live in the daemon's
nursery, not the client's: a session outlives a detached client, and a
client's protocol error or disappearance hurts no other client.

Who may do what is asked of ktapd/policy.py, with the peer's credentials
from SO_PEERCRED.  ``Daemon.shutdown`` (SIGTERM) stops every session as if
by ``exit``, lets their trace_end output reach their clients, and returns.

This module must not run bytecode or open probes itself: sessions do that
through their workers and ktapd/probes.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import stat
import time

import trio

from ktapd import policy
from ktapd.config import Config
from ktapd.session import ENDED, Session, WorkerSpawner
from protocol.bytecode.encoding import DecodeError, decode
from protocol.connection import (
    CLOSED_BY_PEER,
    NEED_DATA,
    SERVER,
    Connection,
    LocalProtocolError,
    RemoteProtocolError,
)
from protocol.messages import (
    PROTOCOL_VERSIONS,
    Attach,
    Detach,
    Detached,
    Ended,
    ErrorMessage,
    Exit,
    Hello,
    Kill,
    ListEvents,
    ListSessions,
    ListSymbols,
    Reply,
    Run,
    Status,
)

log = logging.getLogger("ktapd")

VERSION = "0.5.0"
SERVER_NAME = f"ktapd {VERSION}"
RECEIVE_SIZE = 256 * 1024
SHUTDOWN_GRACE_S = 8.0  # sessions' trace_end and last output, on SIGTERM
FLUSH_GRACE_S = 2.0  # for clients to take their last messages after their session ended


def bind_socket(path: str, mode: int) -> socket.socket:
    """A listening Unix socket at ``path`` (replacing a stale socket file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


class Daemon:
    """The session table and the accept loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sessions: dict[int, Session] = {}
        self.clients: set[Client] = set()
        self.next_id = 1
        self.started = time.monotonic()
        self.stopping = False
        self.features: dict[str, bool] = {}
        self._nursery: trio.Nursery | None = None
        self._accepting: trio.CancelScope | None = None
        self.spawner = WorkerSpawner(spare=config.spare_worker)

    async def serve(self, listener: socket.socket, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``shutdown`` or cancellation."""
        listener.setblocking(False)
        lsock = trio.socket.from_stdlib_socket(listener)
        self.features = await trio.to_thread.run_sync(kernel_features)
        try:
            await self._serve(lsock, task_status)
        finally:
            await self.spawner.discard()

    async def _serve(self, lsock, task_status) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.spawner.start(nursery)  # the first spare worker starts now
            with trio.CancelScope() as self._accepting:
                task_status.started()
                while True:
                    try:
                        conn, _ = await lsock.accept()
                    except OSError as exc:  # EMFILE and friends: wait, do not die
                        log.warning("accept: %s", exc)
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(self._client, conn)
            # Stopping: new connections are refused, not left in the backlog.
            lsock.close()

    async def _client(self, sock) -> None:
        try:
            peer = policy.peer_of_socket(sock)
        except OSError as exc:
            log.warning("cannot read peer credentials: %s", exc)
            sock.close()
            return
        client = Client(self, trio.SocketStream(sock), peer)
        self.clients.add(client)
        try:
            await client.run()
        except Exception:  # a bug with one client must not take the daemon down
            log.exception("client pid %d: internal error", peer.pid)
        finally:
            self.clients.discard(client)

    # --- sessions ---------------------------------------------------------------------

    def start_session(self, peer: policy.Peer, run: Run, program, admin: bool) -> Session:
        session = Session(
            self.next_id, peer, run, program, admin=admin, config=self.config, spawner=self.spawner
        )
        self.next_id += 1
        self.sessions[session.id] = session
        self._nursery.start_soon(self._drive, session)
        log.info("session %d started by uid %d: %s", session.id, peer.uid, session.source)
        return session

    async def _drive(self, session: Session) -> None:
        try:
            await session.run()
        finally:
            if self.stopping:
                session.release_probes_in_background()
            else:
                await session.release_probes()
        if session.discard:
            self.sessions.pop(session.id, None)

    def forget(self, session: Session) -> None:
        """The session's end reached a client: it is gone for good."""
        self.sessions.pop(session.id, None)

    async def shutdown(self) -> None:
        """SIGTERM: stop accepting, stop every session as if by `exit`, flush, return."""
        if self.stopping:
            return
        self.stopping = True
        log.info("stopping: %d session(s)", len(self.sessions))
        if self._accepting is not None:
            self._accepting.cancel()
        for session in list(self.sessions.values()):
            session.request_stop("daemon stopping")
        with trio.move_on_after(SHUTDOWN_GRACE_S):
            for session in list(self.sessions.values()):
                await session.finished.wait()
        with trio.move_on_after(FLUSH_GRACE_S):
            while any(c.session is not None for c in self.clients):
                await trio.sleep(0.02)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()


class Client:
    """One connection: a protocol Connection, its handlers, and the output pump."""

    def __init__(self, daemon: Daemon, stream: trio.SocketStream, peer: policy.Peer) -> None:
        self.daemon = daemon
        self.stream = stream
        self.peer = peer
        self.admin = policy.is_admin(peer, daemon.config)
        self.conn = Connection(SERVER, versions=PROTOCOL_VERSIONS)
        self.send_lock = trio.Lock()
        self.session: Session | None = None  # the attached session
        self._nursery: trio.Nursery | None = None

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._receive_loop()
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._leave()
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _receive_loop(self) -> None:
        while True:
            try:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the peer reset the connection: like a close
                self.conn.receive_data(data)
                while True:
                    event = self.conn.next_event()
                    if event is NEED_DATA:
                        break
                    if event is CLOSED_BY_PEER:
                        return
                    await self.HANDLERS[type(event)](self, event)
            except RemoteProtocolError as exc:
                log.info("client pid %d: protocol error: %s", self.peer.pid, exc)
                await self.send(ErrorMessage(f"protocol error: {exc}", fatal=True))
                return

    async def send(self, message) -> bool:
        """Send one message; False if the protocol state no longer allows it."""
        async with self.send_lock:
            try:
                data = self.conn.send(message)
            except LocalProtocolError as exc:
                log.debug("not sent: %s", exc)
                return False
            # Not shielded: a client that stops reading must not keep ktapd
            # from exiting.  Cancellation only comes when this connection is
            # being torn down, so a half-sent frame does not matter then.
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            return True

    async def refuse(self, of: str, message: str) -> None:
        await self.send(ErrorMessage(message, of=of))

    # --- attaching a session -------------------------------------------------------------

    def _attach(self, session: Session) -> None:
        self.session = session
        session.link = self
        self._nursery.start_soon(self._pump, session)

    def _leave(self) -> None:
        """The connection is going away: a session still attached stops."""
        session = self.session
        if session is not None:
            self.session = None
            session.link = None
            session.discard = True
            if session.finished.is_set():
                self.daemon.forget(session)
            session.request_stop("disconnected")
            session.outbox.wake()

    async def _pump(self, session: Session) -> None:
        """Move the session's output to this client until it ends or we leave it."""
        outbox = session.outbox
        while self.session is session:
            message = outbox.take()
            if message is None:
                await outbox.wait()
                continue
            await self.send(message)
            if isinstance(message, Ended | ErrorMessage):
                # Ended, or the run was refused (probes): the session is over.
                if self.session is session:
                    self.session = None
                    session.link = None
                self.daemon.forget(session)
                return

    # --- handlers, one per message type -------------------------------------------------

    async def on_hello(self, hello: Hello) -> None:
        await self.send(self.conn.hello_reply(SERVER_NAME))

    async def on_run(self, run: Run) -> None:
        if self.daemon.stopping:
            return await self.refuse("run", "ktapd is stopping")
        try:
            # Programs may be 16 MiB: decode and verify off the event loop.
            program = await trio.to_thread.run_sync(decode, run.program)
        except DecodeError as exc:
            return await self.refuse("run", f"bad bytecode: {exc}")
        owned = sum(1 for s in self.daemon.sessions.values() if s.owner.uid == self.peer.uid)
        request = policy.Request(
            policy.RUN, event_kinds=policy.event_kinds(program), sessions_owned=owned
        )
        refusal = policy.decide(self.peer, request, self.daemon.config)
        if refusal:
            return await self.refuse("run", refusal)
        if run.trace_pid is not None and (run.trace_pid <= 0 or not _process_exists(run.trace_pid)):
            return await self.refuse("run", f"no process {run.trace_pid}")
        from ktapd.verifier import VerifyError, verify

        try:
            await trio.to_thread.run_sync(lambda: verify(program, admin=self.admin))
        except VerifyError as exc:
            return await self.refuse("run", f"bytecode rejected: {exc}")
        session = self.daemon.start_session(self.peer, run, program, self.admin)
        if run.detach:
            await self.send(Detached(session.id))
        else:
            self._attach(session)

    async def on_exit(self, _exit: Exit) -> None:
        if self.session is not None:
            self.session.request_stop("exit")

    async def on_detach(self, _detach: Detach) -> None:
        session = self.session
        if session is None:
            return  # crossed an `ended` (protocol/_state.py)
        self.session = None
        session.link = None
        session.outbox.wake()
        await self.send(Detached(session.id))

    async def on_attach(self, attach: Attach) -> None:
        session = self.daemon.sessions.get(attach.session)
        if session is None or policy.decide(
            self.peer, policy.Request(policy.SEE, owner=session.owner.uid), self.daemon.config
        ):
            return await self.refuse("attach", f"no session {attach.session}")
        if session.link is not None:
            return await self.refuse(
                "attach", f"session {session.id} is attached to another client"
            )
        await self.send(
            Reply(
                "attach", {"session": session.id, "state": session.state, "probes": session.probes}
            )
        )
        self._attach(session)

    async def on_kill(self, kill: Kill) -> None:
        session = self.daemon.sessions.get(kill.session)
        if session is None or policy.decide(
            self.peer, policy.Request(policy.SEE, owner=session.owner.uid), self.daemon.config
        ):
            return await self.refuse("kill", f"no session {kill.session}")
        refusal = policy.decide(
            self.peer, policy.Request(policy.STOP, owner=session.owner.uid), self.daemon.config
        )
        if refusal:
            return await self.refuse("kill", refusal)
        session.request_stop("killed")
        if session.link is None:
            # Nobody is attached: nobody will collect its end either.
            session.discard = True
            if session.state == ENDED:
                self.daemon.forget(session)
        await self.send(Reply("kill", {"session": session.id}))

    async def on_list(self, _list: ListSessions) -> None:
        config = self.daemon.config
        visible = [
            s.describe()
            for s in sorted(self.daemon.sessions.values(), key=lambda s: s.id)
            if policy.decide(self.peer, policy.Request(policy.SEE, owner=s.owner.uid), config)
            is None
        ]
        await self.send(Reply("list", visible))

    async def on_events(self, request: ListEvents) -> None:
        refusal = policy.decide(self.peer, policy.Request(policy.EVENTS), self.daemon.config)
        if refusal:
            return await self.refuse("events", refusal)
        try:
            names = await trio.to_thread.run_sync(list_events, request.glob)
        except OSError as exc:
            return await self.refuse("events", f"cannot list events: {exc}")
        await self.send(Reply("events", names))

    async def on_symbols(self, request: ListSymbols) -> None:
        refusal = policy.decide(
            self.peer, policy.Request(policy.SYMBOLS, path=request.path), self.daemon.config
        )
        if refusal:
            return await self.refuse("symbols", refusal)
        lister = function_names if request.what == "functions" else marker_names
        try:
            names = await trio.to_thread.run_sync(lister, request.path)
        except (OSError, ValueError) as exc:
            return await self.refuse("symbols", f"{request.path}: {exc}")
        await self.send(Reply("symbols", sorted(names)))

    async def on_status(self, _status: Status) -> None:
        daemon = self.daemon
        await self.send(
            Reply(
                "status",
                {
                    "version": VERSION,
                    "protocol": self.conn.version or 0,
                    "pid": os.getpid(),
                    "uptime_s": int(time.monotonic() - daemon.started),
                    "sessions": len(daemon.sessions),
                    "features": dict(daemon.features),
                },
            )
        )

    HANDLERS = {
        Hello: on_hello,
        Run: on_run,
        Exit: on_exit,
        Detach: on_detach,
        Attach: on_attach,
        Kill: on_kill,
        ListSessions: on_list,
        ListEvents: on_events,
        ListSymbols: on_symbols,
        Status: on_status,
    }


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_events(glob: str | None) -> list[str]:
    from ktapd.probes import tracefs

    tracefs.ensure_mounted()
    names = [f"{system}:{event}" for system, event in tracefs.list_events()]
    if glob:
        names = [n for n in names if fnmatch.fnmatchcase(n, glob)]
    return sorted(names)


def function_names(path: str) -> list[str]:
    """-lf: a binary's function symbols (the client writes them as probe specs)."""
    from ktapd.probes import uprobe

    return sorted(uprobe.elf_functions(os.path.realpath(path)))


def marker_names(path: str) -> list[str]:
    """-lm: a binary's SDT markers as provider:name."""
    from ktapd.probes import uprobe

    return sorted(
        f"{p.marker.provider}:{p.marker.name}" for p in uprobe.sdt_markers(os.path.realpath(path))
    )


def kernel_features() -> dict[str, bool]:
    """What this kernel offers, for `status` (computed once at start)."""
    features = {
        "tracepoints": False,
        "kprobes": False,
        "uprobes": False,
        "ftrace": False,
        "profile": False,
    }
    try:
        from ktapd.probes import kprobe, tracefs

        root = tracefs.ensure_mounted()
        features["tracepoints"] = (root / "events").is_dir()
        features["uprobes"] = tracefs.has_file("uprobe_events")
        features["kprobes"] = kprobe.available()
        try:
            with open(root / "set_ftrace_filter") as f:
                f.read(1)
            features["ftrace"] = True
        except OSError:
            pass
        features["profile"] = features["tracepoints"]  # cpu-clock needs only perf_event_open (root)
    except Exception as exc:  # no tracefs (not root, odd kernel): report what we know
        log.info("kernel features unavailable: %s", exc)
    return features


__all__ = ["Client", "Daemon", "bind_socket"]
