"""A session's worker process: runs the VM and reads the rings, unprivileged.

ktapd starts one worker per session (DESIGN decision 6) as
``python -m ktapd.worker --fd N`` under ``setpriv --no-new-privs``, with
one end of a Unix socketpair as fd N.  It starts as root only so that it
can read the interpreter wherever it is installed; it imports everything it
will need, then drops to the worker user (setgroups([]), setgid, setuid:
this also clears every capability) *before* it decodes or runs any
bytecode.  From then on it can read only what the daemon hands it: the
program and options as plain data, the perf fds by SCM_RIGHTS.  A VM bug
cannot become root, a stuck session cannot stall another, and sessions use
all cores.

The channel to the daemon (the "worker wire")
---------------------------------------------
Frames as in protocol/framing.py (4-byte length + msgpack map); every map
has a ``t`` field.  File descriptors ride on ``fds`` frames (at most
``FDS_PER_FRAME`` per frame, attached to the frame's bytes) and are
collected in arrival order.

daemon -> worker:
  start   program (bytes), argv [str], limits {name: int}, admin bool,
          uid, gid (to drop to), print_timestamp, dry_run, verbose (bool),
          memory_bytes (address-space cap, 0 for none)
  fds     n: the number of fds attached
  probes  opened: OpenedEvents.to_wire() of the fds sent so far
  refuse  (no fields) the probes could not be opened: the session fails
  stop    the session is stopping (exit, kill, process exited, ...)
  mem     pid, granted: bool: the answer to ``mem``; when granted, the
          task's /proc/PID/mem descriptor came on the ``fds`` frame before
worker -> daemon:
  output      records: [record wire maps] (protocol/records.py)
  registered  probes: [index]: main ran and registered these entries of the
              program's probe table; open them (the daemon opens what its own
              verified copy of the program says, never specs from the worker)
  running     probes: count: events are on, handlers run
  lost        reason, count: newly lost (ring overruns)
  mem         pid: user_string() needs task pid's memory, which the worker
              user may not read; the daemon decides (ktapd/session.py),
              opens /proc/PID/mem read-only and passes the descriptor
  done        ok: bool, reason: "finished" | "exit" | "stopped" | "error"

The lifecycle follows LANGUAGE.md "Program phases": main chunk ->
(registered -> probes -> running -> events until stop, exit() or an
error) -> probes off and final drain -> trace_end (not after an error)
-> done.

This module must not open perf events, touch tracefs or talk to clients:
the daemon does that (ktapd/session.py).
"""

from __future__ import annotations

import array
import contextlib
import faulthandler
import mmap
import os
import resource
import select
import signal
import socket
import sys
import traceback

import msgpack

from protocol import records
from protocol.framing import FrameReader, frame

FDS_PER_FRAME = 250  # the kernel takes at most 253 (SCM_MAX_FD) per message
RECEIVE_SIZE = 256 * 1024
MAX_BATCH = 2048  # records per output frame; a handler printing more flushes early
MAX_TEXT_CHARS = 256 * 1024  # joined text per record (frames stay far below the limit)
POLL_MS = 100  # upper bound on how long output and stop requests may wait
# Data pages per ring: 256 (1 MiB) absorbs bursts at 200k events/s here.
# Ring memory is locked memory of the worker user: past a small per-user
# allowance (perf_event_mlock_kb per CPU) it counts against the worker's
# RLIMIT_MEMLOCK, so many rings (many CPUs) get smaller ones (ring_pages).
RING_PAGES = 256


class WireError(Exception):
    """The other end broke the worker wire (or went away)."""


def pack(doc: dict) -> bytes:
    return frame(msgpack.packb(doc, use_bin_type=True))


def unpack(payload: bytes) -> dict:
    try:
        doc = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types
        raise WireError(f"bad worker frame: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("t"), str):
        raise WireError("worker frame without a type")
    return doc


def fds_frames(fds: list[int]) -> list[tuple[bytes, list[int]]]:
    """(frame bytes, fds to attach) for sending ``fds`` in batches."""
    out = []
    for start in range(0, len(fds), FDS_PER_FRAME):
        batch = fds[start : start + FDS_PER_FRAME]
        out.append((pack({"t": "fds", "n": len(batch)}), batch))
    return out


def text_wire(record: records.Record) -> dict:
    """records.to_wire, with a fast path for the common record."""
    if type(record) is records.Text:
        return {"r": "text", "text": record.text, "time_ns": record.time_ns}
    return records.to_wire(record)


# --- the worker side of the wire ------------------------------------------------------


class Channel:
    """Blocking channel to the daemon, with fd collection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()
        self.fds: list[int] = []
        self._fd_space = socket.CMSG_SPACE(FDS_PER_FRAME * array.array("i").itemsize)

    def send(self, doc: dict) -> None:
        self.sock.sendall(pack(doc))

    def receive(self, block: bool = True) -> dict | None:
        """The next message; None if ``block`` is false and none is complete."""
        while True:
            payload = self.reader.next_frame()
            if payload is not None:
                doc = unpack(payload)
                return doc
            if not block and not _readable(self.sock):
                return None
            data, ancdata, _flags, _addr = self.sock.recvmsg(RECEIVE_SIZE, self._fd_space)
            for level, kind, blob in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(blob[: len(blob) - len(blob) % fds.itemsize])
                    self.fds.extend(fds)
            if not data:
                raise WireError("the daemon closed the channel")
            self.reader.feed(data)

    def take_fds(self, n: int) -> list[int]:
        if n > len(self.fds):
            raise WireError(f"expected {n} fds, {len(self.fds)} arrived")
        taken, self.fds = self.fds[:n], self.fds[n:]
        return taken


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


class Stopped(Exception):
    """The daemon asked the session to stop."""


class Worker:
    """One session, run to its end.  ``run()`` returns when ``done`` was sent."""

    def __init__(self, channel: Channel, start: dict) -> None:
        self.channel = channel
        self.start = start
        self.batch: list[dict] = []
        self.text: list[str] = []  # untimed text not yet in a record
        self.deferred: list[dict] = []  # control messages that arrived while waiting for memory
        self.memfds: dict[int, int | None] = {}  # pid -> /proc/PID/mem fd, None if refused
        self.text_chars = 0
        self.dry_run = bool(start.get("dry_run"))
        self.failed = False  # a run-time error happened: no trace_end
        self.stopped = False
        self.lost_sent = 0

    # --- output -----------------------------------------------------------------
    def emit(self, record: records.Record) -> None:
        # Consecutive untimed text (one record per handler call, as the VM
        # emits it) is joined into one record: the same characters reach
        # the client, with one record per batch to relay instead of one
        # per event.  Timestamped text (-T) keeps its records.
        if type(record) is records.Text and not record.time_ns:
            self.text.append(record.text)
            self.text_chars += len(record.text)
            if self.text_chars >= MAX_TEXT_CHARS:
                self.flush()
            return
        self._end_text()
        self.batch.append(text_wire(record))
        if len(self.batch) >= MAX_BATCH:
            self.flush()

    def _end_text(self) -> None:
        if self.text:
            self.batch.append({"r": "text", "text": "".join(self.text), "time_ns": 0})
            self.text = []
            self.text_chars = 0

    def flush(self) -> None:
        self._end_text()
        if self.batch:
            batch, self.batch = self.batch, []
            self.channel.send({"t": "output", "records": batch})

    # --- phases ---------------------------------------------------------------
    def run(self) -> None:
        from ktapd import verifier, vm
        from protocol.bytecode.encoding import DecodeError, decode
        from protocol.limits import RuntimeLimits

        try:
            program = decode(self.start["program"])
            verified = verifier.verify(program, admin=bool(self.start.get("admin")))
        except (DecodeError, verifier.VerifyError) as exc:
            # The daemon verified it already; this only happens if it changed.
            self.emit(records.Error(f"refused: {exc}", "", 0))
            return self.done(False, "error")
        limits = RuntimeLimits(**self.start.get("limits", {}))
        self.machine = machine = vm.Machine(
            verified,
            emit=self.emit,
            limits=limits,
            timestamps=bool(self.start.get("print_timestamp")),
        )
        # arg[0] the script name, then the words (the VM turns decimal ones into numbers)
        if not machine.run_main(list(self.start.get("argv", []))):
            return self.done(False, "error")
        regs = machine.registrations  # probes and timers; trace_end handlers are kept apart
        reason = "finished"
        if regs and not machine.exit_requested:
            try:
                reason = self.trace(regs)
            except Stopped:
                reason = "stopped"
        if self.failed:
            return self.done(False, "error")
        if not machine.run_end():
            return self.done(False, "error")
        return self.done(True, reason)

    def trace(self, regs: list) -> str:
        """Probes on until something stops them; returns the done reason."""
        from ktapd.probes import events
        from ktapd.probes.perf_event import OpenedEvents, RingSet

        # Event.read_user_string() reads through this module-level function;
        # the worker reads through descriptors the daemon opened instead.
        events.read_user_string = self.read_user_string

        self.flush()
        self.channel.send({"t": "registered", "probes": sorted({r.index for r in regs})})
        opened = None
        while opened is None:
            msg = self.channel.receive()
            if msg["t"] == "fds":
                continue  # collected by the channel
            if msg["t"] == "probes":
                doc = msg["opened"]
                opened = OpenedEvents.from_wire(doc, self.channel.take_fds(len(doc["slots"])))
            elif msg["t"] == "refuse":
                self.failed = True
                return "error"
            elif msg["t"] == "stop":
                raise Stopped
        by_tag: dict[int, list] = {}
        for reg in regs:
            by_tag.setdefault(reg.index, []).append(reg)
        ticks = {d.tag for d in opened.descs if d.kind == "tick"}
        rings = open_rings(RingSet, opened)
        machine = self.machine

        def on_event(event) -> None:
            if self.failed or self.dry_run:
                return
            tag = event.tag
            context = None if tag in ticks else event
            for reg in by_tag.get(tag, ()):
                if not machine.run_handler(reg, context):
                    self.failed = True
                    return

        poller = select.poll()
        control = self.channel.sock.fileno()
        poller.register(control, select.POLLIN)
        for fd in rings.filenos():
            poller.register(fd, select.POLLIN)
        reason = "finished"
        try:
            rings.enable()
            self.channel.send({"t": "running", "probes": len(opened.fds)})
            while True:
                # Control messages set aside while waiting for a memory
                # descriptor are where poll cannot see them.
                ready = poller.poll(0 if self.deferred else POLL_MS)
                if self.deferred or any(fd == control for fd, _ in ready):
                    if self._stop_requested():
                        reason = "stopped"
                        break
                rings.drain(on_event)
                self.flush()
                self._report_lost(rings.lost)
                if self.failed:
                    reason = "error"
                    break
                if machine.exit_requested:
                    reason = "exit"
                    break
            # Probes off, then whatever is still in the rings (LANGUAGE.md phase 3).
            rings.finish(on_event if not self.failed else _ignore)
            self.flush()
            self._report_lost(rings.lost)
        finally:
            rings.close()
            opened.close()
        return reason

    def _stop_requested(self) -> bool:
        while (msg := self._next_control()) is not None:
            if msg["t"] == "stop":
                return True
        return False

    def _next_control(self) -> dict | None:
        if self.deferred:
            return self.deferred.pop(0)
        return self.channel.receive(block=False)

    def read_user_string(self, pid: int, addr: int, limit: int) -> str | None:
        """user_string(): a NUL-terminated string in task ``pid``'s memory.

        The worker user may not read other users' tasks, so the daemon opens
        /proc/PID/mem for it (once per task, if the session may read that
        task) and passes the descriptor; reads are then plain preads here.
        The open file keeps pointing at that task's memory: once the task
        is gone, reads fail and the string is nil."""
        fd = self.memfds.get(pid, _UNASKED)
        if fd is _UNASKED:
            fd = self._ask_for_memory(pid)
        if fd is None:
            return None
        text = read_string(fd, addr, limit)
        if text is None:
            # The task may be gone (its pid may come back as another task):
            # ask again next time rather than keep a dead descriptor.
            os.close(self.memfds.pop(pid))
        return text

    def _ask_for_memory(self, pid: int) -> int | None:
        if len(self.memfds) >= MAX_MEMFDS:
            for old in list(self.memfds)[: MAX_MEMFDS // 4]:  # oldest first (dicts keep order)
                old_fd = self.memfds.pop(old)
                if old_fd is not None:
                    os.close(old_fd)
        self.channel.send({"t": "mem", "pid": pid})
        while True:
            msg = self.channel.receive()
            if msg["t"] == "fds":
                continue  # the descriptor, if granted; collected by the channel
            if msg["t"] == "mem" and msg.get("pid") == pid:
                # Whole frames that came with the answer: poll will not
                # report them, so set them aside too.
                while (payload := self.channel.reader.next_frame()) is not None:
                    self.deferred.append(unpack(payload))
                fd = self.channel.take_fds(1)[0] if msg.get("granted") is True else None
                self.memfds[pid] = fd
                return fd
            self.deferred.append(msg)  # a stop request, seen after this handler

    def _report_lost(self, total: int) -> None:
        if total > self.lost_sent:
            self.channel.send({"t": "lost", "reason": "ring", "count": total - self.lost_sent})
            self.lost_sent = total

    def done(self, ok: bool, reason: str) -> None:
        self.flush()
        self.channel.send({"t": "done", "ok": ok, "reason": reason})


def ring_pages(rings: int, memlock_bytes: int) -> int:
    """The largest power of two <= RING_PAGES whose rings fit in half the memlock limit."""
    pages = RING_PAGES
    while pages > 1 and rings * (pages + 1) * mmap.PAGESIZE > memlock_bytes // 2:
        pages //= 2
    return pages


def open_rings(ring_set, opened):
    """Map the rings, smaller if the kernel refuses the locked memory."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limit = soft if soft != resource.RLIM_INFINITY else 1 << 40
    pages = ring_pages(sum(1 for _index, owns in opened.slots if owns), limit)
    while True:
        try:
            return ring_set(opened, pages=pages)
        except PermissionError:
            if pages <= 1:
                raise
            pages //= 2


def _ignore(_event) -> None:
    pass


_UNASKED = object()
MAX_MEMFDS = 512  # tasks whose memory descriptors the worker keeps open


def read_string(fd: int, addr: int, limit: int) -> str | None:
    """A NUL-terminated string at ``addr`` through a /proc/PID/mem descriptor,
    at most ``limit`` bytes; None if the memory cannot be read."""
    from ktapd.probes.events import read_c_string  # preloaded (PRELOAD_MODULES)

    return read_c_string(lambda at, size: os.pread(fd, size, at), addr, limit)


def limit_memory(max_bytes: int) -> None:
    """Cap the worker's address space (0: no cap).

    Step budgets bound a script's time, not its memory: within them it can
    fill many tables.  Past the cap an allocation fails, the session ends
    with an error, and the daemon and every other session go on."""
    if max_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def drop_privileges(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` with no supplementary groups, for good."""
    if os.getuid() == 0 or os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    if uid != 0 and (os.geteuid() == 0 or os.getegid() == 0 and gid != 0):
        raise OSError("could not drop root privileges")


def _preload() -> None:
    """Import everything the worker will need while it can still read the
    interpreter's files: after the privilege drop the worker user may not
    (a Python under /root, say), and a lazy import would fail mid-session."""
    import codecs
    import importlib

    for name in PRELOAD_MODULES:
        importlib.import_module(name)
    for encoding in PRELOAD_CODECS:
        codecs.lookup(encoding)


# Modules the VM, the probe layer and the worker import, some lazily.
PRELOAD_MODULES = (
    "ktapd.probes.argstr",
    "ktapd.probes.events",
    "ktapd.probes.perf_event",
    "ktapd.probes.symbols",
    "ktapd.verifier",
    "ktapd.vm",
    "protocol.bytecode.encoding",
    "platform",
    "datetime",
)
# Codecs looked up by name at run time (each is a lazy import in encodings/).
PRELOAD_CODECS = (
    "utf-8",
    "ascii",
    "latin-1",
    "unicode_escape",
    "raw_unicode_escape",
    "idna",
    "utf-16",
    "utf-32",
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "--fd":
        print("usage: python -m ktapd.worker --fd N  (started by ktapd)", file=sys.stderr)
        return 2
    # `kill -USR1 <worker>` prints where it is (for a stuck session).
    faulthandler.register(signal.SIGUSR1, all_threads=False)
    sock = socket.socket(fileno=int(argv[1]))
    channel = Channel(sock)
    try:
        # Import first, then wait: ktapd keeps one worker started ahead of
        # need (ktapd/session.py WorkerSpawner), and a spare that has done
        # its imports turns a session's start into a message, not a process
        # start.  Nothing session-specific happens before "start" arrives.
        _preload()
        start = channel.receive()
        if start["t"] != "start":
            raise WireError(f"expected start, got {start['t']}")
        drop_privileges(int(start["uid"]), int(start["gid"]))
        limit_memory(int(start.get("memory_bytes", 0)))
        Worker(channel, start).run()
    except (WireError, BrokenPipeError, ConnectionResetError) as exc:
        print(f"ktapd worker {os.getpid()}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug here or in the VM: tell the client, then die
        traceback.print_exc()
        with contextlib.suppress(OSError):
            message = f"internal error in the session worker: {type(exc).__name__}: {exc}"
            channel.send({"t": "output", "records": [records.to_wire(records.Error(message))]})
        return 1
    finally:
        sock.close()
    return 0


def exit_now(code: int) -> None:
    """Leave without the interpreter's teardown (tens of milliseconds of
    freeing a VM's worth of objects).  The daemon waits for the worker to
    exit before it tells the client "ended", and a worker owns nothing that
    needs finalizing: its fds and maps go with the process."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
