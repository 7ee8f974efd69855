"""The client: talk to ktapd over its Unix socket, stream a session's output.

This is the I/O shell around protocol.connection.Connection (sans-IO).  A
``Handshake`` connects, says hello and sends the first request on a plain
blocking socket (one-shot requests such as ``list`` finish right there);
a session (``run`` or ``attach``) is then relayed by ``SessionLoop``, one
selector over the socket, a signal wake-up pipe and the workload's pidfd.
(No event loop library: start-up time is the point of ``-e`` one-liners
and ``-- cmd``, and trio cost each run about 60 ms of CPU.)
Output goes through ktapctl/render.py.  It owns the things only the client
can do:

* Ctrl-C (or SIGTERM): the first one sends ``exit`` (``detach`` when attached to
  someone's session) and keeps reading until ``ended``, so trace_end's
  output arrives; a second one stops at once (exit status 130).
* ``-- cmd``: the workload is forked *before* anything else, as the
  calling user, and waits on a pipe; it is released (exec) when
  ``started`` says the probes are on, reaped as soon as it exits (a zombie
  would look alive to the daemon), and terminated if the session ends
  first (as bpftrace does with ``-c``).
* Embedded mode: when no daemon answers at the default socket, root (or
  anyone, for a script with no trace/tick/profile probe, which needs no
  privilege) gets an in-process daemon from ``ktapd.embedded`` on a
  private socket, used through exactly the same code.  A socket the user
  named (``--socket``, ``$KTAP_SOCKET``) never falls back: they asked for
  that daemon.

This module must not compile scripts (ktapctl/cli.py hands it a Program),
format records itself, or import ktapd anywhere but ``_embedded_daemon``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ktapctl import __version__
from ktapctl.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROG,
    Options,
    script_name,
)
from ktapctl.render import STDERR, render_json, render_text, stream_of
from protocol import messages as msg
from protocol import records
from protocol.bytecode.encoding import encode
from protocol.bytecode.program import PROBE_PROFILE, PROBE_TICK, PROBE_TRACE, Program
from protocol.connection import (
    CLIENT,
    CLOSED_BY_PEER,
    NEED_DATA,
    Connection,
    ProtocolError,
)

TRACING_NOTICE = "Tracing... Hit Ctrl-C to end."
RECEIVE_SIZE = 256 * 1024
# Probe kinds that need the daemon's privileges; a program without them
# may run in an embedded daemon for any user.
PRIVILEGED_PROBE_KINDS = (PROBE_TRACE, PROBE_TICK, PROBE_PROFILE)
# Requests worth an embedded daemon when none runs (root only): listing
# what the kernel and a binary offer.  list/attach/kill need a real one.
EMBEDDABLE_REQUESTS = ("events", "functions", "markers", "status")
# Ctrl-C, and a polite kill: both stop the session the way ktap's Ctrl-C
# did (trace_end runs, its output arrives); the second one leaves at once.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
WORKLOAD_GRACE_S = 1.0  # SIGTERM -> SIGKILL for a workload outliving its session


class ClientError(Exception):
    """Something that ends this ktapctl with a message on stderr."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class DaemonUnreachable(ClientError):
    """Nothing answers at the socket (nothing was sent yet, so falling back
    to an embedded daemon is safe)."""


# --- one connection -------------------------------------------------------------


class Handshake:
    """A greeted connection on a plain blocking socket.

    Connecting, the hellos and the first request; one-shot requests
    (list, status, -le ...) end here, a streamed session goes on in a
    ``SessionLoop`` on the same socket and Connection."""

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self.sock = sock
        self.conn = conn
        self.server = ""

    @classmethod
    def open(cls, path: str) -> Handshake:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise _connect_error(path, exc) from None
        channel = cls(sock, Connection(CLIENT))
        try:
            channel.send(msg.Hello(client=f"{PROG} {__version__}"))
            reply = channel.receive()
        except BaseException:
            sock.close()
            raise
        if isinstance(reply, msg.ErrorMessage):
            sock.close()
            raise ClientError(f"ktapd refused the connection: {reply.message}")
        channel.server = reply.server
        return channel

    def send(self, message: msg.Message) -> None:
        try:
            self.sock.sendall(self.conn.send(message))
        except OSError:
            raise ClientError("lost the connection to ktapd") from None

    def receive(self) -> msg.Message:
        while (event := _buffered_message(self.conn)) is None:
            try:
                data = self.sock.recv(RECEIVE_SIZE)
            except OSError:
                raise ClientError("lost the connection to ktapd") from None
            _feed(self.conn, data)
        return event

    def request(self, message: msg.Message) -> object:
        """A one-shot request; its reply's data, or ClientError when refused."""
        self.send(message)
        while True:
            answer = self.receive()
            if isinstance(answer, msg.Reply):
                return answer.data
            if isinstance(answer, msg.ErrorMessage):
                raise ClientError(answer.message)

    def close(self) -> None:
        self.sock.close()


def _connect_error(path: str, exc: OSError) -> ClientError:
    if isinstance(exc, FileNotFoundError):
        return DaemonUnreachable(f"no ktapd socket at {path}")
    if isinstance(exc, ConnectionRefusedError):
        return DaemonUnreachable(f"ktapd is not running (nothing listens at {path})")
    if isinstance(exc, PermissionError):
        return ClientError(f"permission denied on {path}: ask to be added to the ktap group")
    return DaemonUnreachable(f"cannot connect to {path}: {exc.strerror}")


def _buffered_message(conn: Connection) -> msg.Message | None:
    """The next message already received, or None when more bytes are
    needed; the end of the stream and protocol failures become ClientError."""
    try:
        event = conn.next_event()
    except ProtocolError as exc:
        raise ClientError(f"protocol error talking to ktapd: {exc}") from None
    if event is NEED_DATA:
        return None
    if event is CLOSED_BY_PEER:
        raise ClientError("ktapd closed the connection")
    if isinstance(event, msg.ErrorMessage) and event.fatal:
        raise ClientError(f"ktapd: {event.message}")
    return event


def _feed(conn: Connection, data: bytes) -> None:
    try:
        conn.receive_data(data)
    except ProtocolError as exc:
        raise ClientError(f"protocol error talking to ktapd: {exc}") from None


class SessionLoop:
    """The I/O of a streamed session, without an event loop library.

    One selector waits on the daemon's socket, a wake-up pipe for Ctrl-C
    and SIGTERM (signal.set_wakeup_fd) and the workload's pidfd.  A
    session is one conversation and one child, which a blocking loop
    handles in a few lines; trio cost every run about 60 ms of imports
    and its own start-up and teardown.  ``next_message`` returns the next
    message and reports signals and the workload's exit on the way."""

    def __init__(self, handshake: Handshake, workload: Workload | None = None) -> None:
        self.handshake = handshake
        self.workload = workload
        self.pending_signals: list[int] = []
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pidfd = -1
        self._saved_handlers: dict[int, object] = {}
        self._saved_wakeup = -1

    def __enter__(self) -> SessionLoop:
        for signum in STOP_SIGNALS:
            self._saved_handlers[signum] = signal.signal(signum, self._on_signal)
        self._saved_wakeup = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        self._selector.register(self.handshake.sock, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        if self.workload is not None:
            with contextlib.suppress(OSError):
                self._pidfd = os.pidfd_open(self.workload.pid)
                self._selector.register(self._pidfd, selectors.EVENT_READ)
        return self

    def __exit__(self, *exc) -> None:
        signal.set_wakeup_fd(self._saved_wakeup)
        for signum, handler in self._saved_handlers.items():
            signal.signal(signum, handler)
        self._selector.close()
        for fd in (self._wake_read, self._wake_write, self._pidfd):
            if fd >= 0:
                os.close(fd)

    def _on_signal(self, signum, _frame) -> None:
        self.pending_signals.append(signum)

    def next_message(self, on_signal: Callable[[int], None]) -> msg.Message:
        """The next message from the daemon.  Meanwhile each stop signal is
        passed to ``on_signal`` (which may raise), and the workload is
        reaped as soon as it exits (a zombie would look alive to the daemon)."""
        conn = self.handshake.conn
        while True:
            while self.pending_signals:
                on_signal(self.pending_signals.pop(0))
            event = _buffered_message(conn)
            if event is not None:
                return event
            # Without a pidfd the workload is polled every 50 ms.
            no_pidfd = self.workload is not None and self._pidfd < 0
            timeout = 0.05 if no_pidfd and self.workload.status is None else None
            for key, _mask in self._selector.select(timeout):
                if key.fileobj is self.handshake.sock:
                    try:
                        data = self.handshake.sock.recv(RECEIVE_SIZE)
                    except OSError:
                        raise ClientError("lost the connection to ktapd") from None
                    _feed(conn, data)
                elif key.fd == self._wake_read:
                    with contextlib.suppress(OSError):
                        while os.read(self._wake_read, 64):
                            pass
                elif key.fd == self._pidfd:
                    self._selector.unregister(self._pidfd)
                    self.workload.poll()
            if no_pidfd:
                self.workload.poll()


# --- where output goes ------------------------------------------------------------


class Sink:
    """Writes records as text (stdout or -o, lost notes to stderr) or JSON lines."""

    def __init__(self, out, json_lines: bool, err=None) -> None:
        self.out = out
        self.err = err if err is not None else sys.stderr
        self.json_lines = json_lines

    def record(self, record: records.Record) -> None:
        if self.json_lines:
            self.out.write(render_json(record) + "\n")
        elif stream_of(record) == STDERR:
            self.err.write(render_text(record))
            self.err.flush()
        else:
            self.out.write(render_text(record))

    def event(self, doc: dict) -> None:
        """Session events (started, ended) as JSON lines; nothing in text mode."""
        if self.json_lines:
            self.out.write(json.dumps(doc, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        self.out.flush()


class LostMeter:
    """Coalesces ``lost`` messages so a storm of ring-buffer overruns is a
    line a second, not a line a batch.  The first report of each reason
    prints at once, later ones at most every ``interval`` seconds with the
    sum since the last line, and whatever is pending prints when the
    session ends: every count reaches the user, added up."""

    def __init__(self, sink: Sink, interval: float = 1.0, clock=time.monotonic) -> None:
        self.sink = sink
        self.interval = interval
        self.clock = clock
        self.pending: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def add(self, reason: str, count: int) -> None:
        self.pending[reason] = self.pending.get(reason, 0) + count
        last = self.last.get(reason)
        if last is None or self.clock() - last >= self.interval:
            self._emit(reason)

    def flush(self) -> None:
        for reason in list(self.pending):
            self._emit(reason)

    def _emit(self, reason: str) -> None:
        count = self.pending.pop(reason, 0)
        if count:
            self.sink.record(records.Lost(reason, count))
            self.last[reason] = self.clock()


def open_output(opts: Options):
    """stdout, or the -o file (created or truncated, mode 0600 as in ktap)."""
    if not opts.output:
        with contextlib.suppress(AttributeError, ValueError):
            sys.stdout.reconfigure(errors="backslashreplace")
        return sys.stdout
    try:
        fd = os.open(opts.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise ClientError(f"cannot open {opts.output}: {exc.strerror}") from None
    return os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")


# --- the workload of `-- cmd` -----------------------------------------------------


class Workload:
    """``cmd`` forked now, held on a pipe until ``release``; reaped by ``wait``."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.status: int | None = None  # wait status once reaped
        self.released = False
        read_end, self._go = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: wait for the go byte, then exec
            _workload_child(read_end, self._go, command)
        os.close(read_end)

    def release(self) -> None:
        if not self.released and self._go >= 0:
            self.released = True
            with contextlib.suppress(OSError):
                os.write(self._go, b"g")
            self._close_pipe()

    def _close_pipe(self) -> None:
        if self._go >= 0:
            os.close(self._go)
            self._go = -1

    def poll(self) -> bool:
        """Reap if it has exited; True when it has."""
        if self.status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.status = status
        return self.status is not None

    def finish(self) -> None:
        """After the session: a workload never released exits on the closed
        pipe; one still running is terminated, then killed."""
        self._close_pipe()
        if self.poll():
            return
        if self.released:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + WORKLOAD_GRACE_S
        while time.monotonic() < deadline:
            if self.poll():
                return
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.status = self.status if self.status is not None else -1


def _workload_child(read_end: int, go: int, command: list[str]) -> None:
    """Runs in the forked child; never returns."""
    try:
        os.close(go)
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        if os.read(read_end, 1) != b"g":
            os._exit(127)  # the client gave up before the probes were on
        os.close(read_end)
        os.execvp(command[0], command)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.write(2, f"{PROG}: cannot run {command[0]}: {exc.strerror}\n".encode())
    except BaseException:
        pass
    os._exit(127)


# --- a session on one connection ----------------------------------------------------


@dataclass
class SessionState:
    session: int | None = None
    started: bool = False
    interrupts: int = 0


class _StopAtOnce(Exception):
    """A second Ctrl-C: leave without waiting for the session's end."""


def stream_session(
    loop: SessionLoop,
    opts: Options,
    sink: Sink,
    workload: Workload | None = None,
    on_interrupt: msg.Message | None = None,
) -> int:
    """Relay the session the connection is attached to (its run or attach
    is already sent) until it ends.

    Ctrl-C sends ``on_interrupt`` (exit by default) once, then a second
    Ctrl-C returns EXIT_INTERRUPTED without waiting."""
    state = SessionState()
    interrupt_message = on_interrupt if on_interrupt is not None else msg.Exit()

    def on_signal(signum: int) -> None:
        state.interrupts += 1
        if state.interrupts > 1:
            raise _StopAtOnce
        if sys.stderr.isatty() and signum == signal.SIGINT:
            sys.stderr.write("\n")  # after the terminal's ^C, as ktap did
        # A failed send shows up as a failed receive below.
        with contextlib.suppress(ClientError):
            loop.handshake.send(interrupt_message)

    lost = LostMeter(sink)
    try:
        return _relay_messages(loop, on_signal, opts, sink, workload, state, lost)
    except _StopAtOnce:
        return EXIT_INTERRUPTED
    finally:
        lost.flush()
        sink.flush()


def _relay_messages(loop, on_signal, opts, sink, workload, state, lost: LostMeter) -> int:
    while True:
        message = loop.next_message(on_signal)
        if isinstance(message, msg.Output):
            for record in message.records:
                sink.record(record)
            sink.flush()
        elif isinstance(message, msg.Started):
            state.session, state.started = message.session, True
            if workload is not None:
                workload.release()
            sink.event({"type": "started", "session": message.session, "probes": message.probes})
            if not opts.quiet and not opts.json:
                sink.record(records.Notice(TRACING_NOTICE))
            sink.flush()
            if opts.verbose:
                _say(f"session {message.session} started, {message.probes} probes on")
        elif isinstance(message, msg.Lost):
            lost.add(message.reason, message.count)
        elif isinstance(message, msg.Ended):
            lost.flush()
            sink.event(
                {
                    "type": "ended",
                    "session": message.session,
                    "ok": message.ok,
                    "reason": message.reason,
                }
            )
            if not message.ok and message.reason != "error":
                _say(f"session ended: {message.reason}")
            elif opts.verbose:
                _say(f"session {message.session} ended: {message.reason}")
            return EXIT_OK if message.ok else EXIT_FAILED
        elif isinstance(message, msg.Detached):
            if state.interrupts == 0:  # run --detach: the id is the output
                sink.out.write(f"{message.session}\n")
            elif opts.verbose:
                _say(f"detached from session {message.session}; it keeps running")
            return EXIT_OK
        elif isinstance(message, msg.ErrorMessage):
            if message.of in ("run", "attach"):
                raise ClientError(message.message)
            _say(message.message)
        # Replies to nothing we asked for are ignored.


def run_message(program: Program, opts: Options, workload: Workload | None) -> msg.Run:
    """The `run` request: the ktap_option_t fields, argv as strings (the VM
    turns base-10 integers into numbers)."""
    return msg.Run(
        program=encode(program),
        argv=(script_name(opts), *opts.script_args),
        verbose=opts.verbose,
        trace_pid=workload.pid if workload is not None else opts.trace_pid,
        workload=workload is not None,
        trace_cpu=opts.trace_cpu,
        print_timestamp=opts.timestamps,
        quiet=opts.quiet,
        dry_run=opts.dry_run,
        detach=opts.detach,
    )


# --- entry points (called by ktapctl/cli.py) ----------------------------------------


def run_program(program: Program, opts: Options) -> int:
    """Run ``program`` as a session and stream its output; the exit status."""
    sink_out = None
    workload = None
    try:
        sink_out = open_output(opts)
        sink = Sink(sink_out, opts.json)
        workload = Workload(opts.command) if opts.command else None
        first = run_message(program, opts, workload)

        def session(handshake: Handshake) -> int:
            handshake.send(first)
            return _stream(handshake, opts, sink, workload)

        return _with_daemon(opts, session, may_embed(program, os.geteuid()))
    except ClientError as exc:
        _say(str(exc))
        return exc.status
    finally:
        if workload is not None:
            workload.finish()
        if sink_out is not None and sink_out is not sys.stdout:
            sink_out.close()


def may_embed(program: Program, euid: int) -> bool:
    """May this program run in an embedded daemon when none answers?  Root
    may run anything; anyone may run a program without trace/tick/profile
    probes (its main chunk and trace_end need no privilege)."""
    return euid == 0 or not any(p.kind in PRIVILEGED_PROBE_KINDS for p in program.probes)


def run_request(opts: Options) -> int:
    """list, status, attach, kill, -le, -lf, -lm."""
    try:
        if opts.action == "attach":
            sink = Sink(open_output(opts), opts.json)

            def attach(handshake: Handshake) -> int:
                handshake.send(msg.Attach(opts.session))
                return _stream(handshake, opts, sink, on_interrupt=msg.Detach())

            return _with_daemon(opts, attach, embeddable=False)
        message = _REQUESTS[opts.action](opts)

        def ask(handshake: Handshake) -> int:
            data = handshake.request(message)
            _print_reply(opts, data)
            return EXIT_OK

        embeddable = os.geteuid() == 0 and opts.action in EMBEDDABLE_REQUESTS
        return _with_daemon(opts, ask, embeddable)
    except ClientError as exc:
        _say(str(exc))
        return exc.status


_REQUESTS: dict[str, Callable[[Options], msg.Message]] = {
    "list": lambda o: msg.ListSessions(),
    "status": lambda o: msg.Status(),
    "kill": lambda o: msg.Kill(o.session),
    "events": lambda o: msg.ListEvents(o.glob),
    "functions": lambda o: msg.ListSymbols(os.path.abspath(o.script), "functions"),
    "markers": lambda o: msg.ListSymbols(os.path.abspath(o.script), "markers"),
}


def _stream(
    handshake: Handshake, opts: Options, sink: Sink, workload=None, on_interrupt=None
) -> int:
    """Relay the session on this connection until it ends."""
    with SessionLoop(handshake, workload) as loop:
        return stream_session(loop, opts, sink, workload, on_interrupt)


def _with_daemon(opts: Options, body: Callable[[Handshake], int], embeddable: bool) -> int:
    """``body`` with a greeted connection to the daemon at the socket, or to
    an embedded one (see the module docstring for when)."""
    if opts.embedded:
        return _embedded_daemon(body, opts.verbose)
    try:
        handshake = Handshake.open(opts.socket_path)
    except DaemonUnreachable as exc:
        if opts.socket_was_chosen or not embeddable:
            hint = "" if opts.socket_was_chosen else " (is the ktapd service running?)"
            raise ClientError(f"{exc}{hint}") from None
        if opts.verbose:
            _say(f"{exc}; starting an embedded daemon")
        return _embedded_daemon(body, opts.verbose)
    if opts.verbose:
        _say(f"connected to {handshake.server or 'ktapd'} at {opts.socket_path}")
    try:
        return body(handshake)
    finally:
        handshake.close()


def _embedded_daemon(body: Callable[[Handshake], int], verbose: bool = False) -> int:
    try:
        from ktapd.embedded import serve  # the one ktapctl -> ktapd import (DESIGN.md)
    except ImportError as exc:
        raise ClientError(f"no ktapd to start in-process here ({exc})") from None
    with serve() as path:
        handshake = Handshake.open(path)
        if verbose:
            _say(f"started an embedded {handshake.server or 'ktapd'} at {path}")
        try:
            return body(handshake)
        finally:
            handshake.close()


# --- printing replies -------------------------------------------------------------------


def _print_reply(opts: Options, data: object) -> None:
    out = sys.stdout
    if opts.json:
        out.write(json.dumps(data, default=_json_default, separators=(",", ":")) + "\n")
    elif opts.action == "kill":
        if opts.verbose:
            _say(f"session {opts.session} stopped")
    elif opts.action == "list":
        out.write(format_sessions(data))
    elif opts.action in SYMBOL_PREFIXES and isinstance(data, list):
        out.write("".join(symbol_line(opts.action, opts.script, str(s)) + "\n" for s in data))
    elif isinstance(data, list):  # events: one name a line, as ktap printed them
        out.write("".join(f"{item}\n" for item in data))
    elif isinstance(data, dict):
        out.write("".join(f"{key}: {value}\n" for key, value in _flatten(data)))
    elif data is not None:
        out.write(f"{data}\n")
    out.flush()


# -lf / -lm print each symbol as the event spec that probes it, as ktap did.
SYMBOL_PREFIXES = {"functions": "probe", "markers": "sdt"}


def symbol_line(action: str, dso: str, symbol: str) -> str:
    """``probe:DSO:sym`` for a function, ``sdt:DSO:name`` for a marker.

    A daemon that already answers with whole specs (``probe:/real/path:sym``,
    ``sdt:/real/path:provider:name``) is printed as it said: it knows the
    form its probe layer accepts.  Bare names get the prefix and the DSO as
    the user wrote it; a bare ``provider:name`` marker keeps only the name,
    as ktap printed it."""
    prefix = SYMBOL_PREFIXES[action]
    if symbol.startswith(prefix + ":"):
        return symbol
    if action == "markers":
        symbol = symbol.rpartition(":")[2]
    return f"{prefix}:{dso}:{symbol}"


def format_sessions(data: object) -> str:
    """The `list` reply as a table: one row a session, one column a field,
    in the order the daemon sent them."""
    if not data:
        return "no sessions\n"
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        return f"{data}\n"
    columns: list[str] = []
    for row in data:
        columns.extend(key for key in row if key not in columns)
    cells = [[_cell(row.get(col)) for col in columns] for row in data]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    lines = [columns, *cells]
    return "".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        + "\n"
        for line in lines
    )


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _flatten(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", _cell(value)


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    raise TypeError(f"not JSON: {type(value).__name__}")


def _say(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()
