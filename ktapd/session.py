"""A session on the daemon side: its worker, its probes, its output queue.

A ``Session`` is one submitted script, owned by the peer that ran it and
independent of any connection (it survives ``detach``).  ``Session.run``
drives it through LANGUAGE.md's program phases with a worker process
(ktapd/worker.py, protocol described there):

    start worker -> main chunk runs in the worker -> "registered": open the
    probes here (privileged, ktapd/probes) and hand the fds over -> "running":
    ``started`` to the client -> events, until a stop request (client exit,
    kill, traced process gone, daemon stopping, client vanished), exit() in
    the script or a run-time error -> the worker turns probes off, drains,
    runs trace_end -> "done" -> the worker exits, the probes are closed and
    their dynamic events removed -> lost summary and ``ended``.

A worker that dies ends only its own session ("worker died: ...").

What the session produces goes into its ``Outbox``: protocol messages in
order, records bounded by the configured buffer size (what does not fit is
counted as lost "output"), lost counts ahead of everything else.  The
attached client, if any, drains it (ktapd/server.py); a detached session's
output waits there for a later ``attach``.

This module must not speak the client protocol's bytes (ktapd/server.py
does) or run bytecode (the worker does).
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import replace

import trio

from ktapd import worker as wire
from ktapd.config import Config
from ktapd.policy import Peer
from protocol import limits as fmt
from protocol import records
from protocol.bytecode import builtins, opcodes
from protocol.bytecode.program import Program
from protocol.limits import RuntimeLimits
from protocol.messages import (
    MAX_RECORDS,
    Ended,
    ErrorMessage,
    Lost,
    MessageError,
    Output,
    Run,
    Started,
    record_from_wire,
)

log = logging.getLogger("ktapd")

# Session states, as `list` shows them.
STARTING = "starting"  # worker running the main chunk, probes being opened
RUNNING = "running"  # probes on
ENDING = "ending"  # stop requested, trace_end may be running
ENDED = "ended"

# Records per `output` message stop at this many bytes (or MAX_RECORDS), far
# below the frame limit even for text made of 4-byte characters.
MAX_OUTPUT_BYTES = 2 * 1024 * 1024
STOP_GRACE_S = 15.0  # trace_end may take its main-chunk budget; then the worker is killed
DISCONNECTED_GRACE_S = 1.0
WORKER_EXIT_GRACE_S = 5.0  # after "done", before the worker is killed

# The highest value a `run` may ask for, per RuntimeLimits field.
LIMIT_CEILINGS = {
    "string_bytes": fmt.STRING_BYTES_CEILING,
    "table_entries": fmt.TABLE_ENTRIES_CEILING,
    "table_entries_max": fmt.TABLE_ENTRIES_CEILING,
    "call_depth": 1000,
    "handler_steps": 10_000_000,
    "main_steps": 1_000_000_000,
    "output_line_bytes": 1 << 20,
}


def session_limits(defaults: RuntimeLimits, requested: dict[str, int]) -> RuntimeLimits:
    """The daemon's defaults with the client's requests, each capped at its ceiling."""
    return replace(defaults, **{k: min(v, LIMIT_CEILINGS[k]) for k, v in requested.items()})


def record_size(record) -> int:
    """Roughly the bytes a record holds (for the output buffer bound)."""
    if type(record) is records.Text:
        return 16 + len(record.text)
    if type(record) is records.Histogram:
        return 32 + sum(8 + len(key) for key, _ in record.rows)
    if type(record) is records.Quantize:
        return 32 + 16 * len(record.buckets)
    return 64 + sum(len(v) for v in vars(record).values() if isinstance(v, str))


def record_count(record) -> int:
    """How much output a record is, as a lost count: lines for text, else 1."""
    if type(record) is records.Text:
        return max(1, record.text.count("\n"))
    return 1


class Outbox:
    """What a session has to say to its client, in order, bounded.

    Records count against ``max_bytes`` (record_size); what does not fit is
    dropped and counted as lost "output" (record_count: lines of text).
    Control messages (started, ended, refusals) and the final lost summary
    are never dropped; lost counts jump the queue."""

    def __init__(self, session: int, max_bytes: int) -> None:
        self.session = session
        self.max_bytes = max_bytes
        self.items: deque = deque()  # [record, size] pairs, or a protocol message
        self.buffered = 0  # bytes of records queued
        self.pending_lost: dict[str, int] = {}
        self.lost_total: dict[str, int] = {}
        self._changed = trio.Event()

    def put_records(self, batch: list, *, bounded: bool = True) -> None:
        dropped = 0
        for record in batch:
            size = record_size(record)
            if bounded and self.buffered + size > self.max_bytes:
                dropped += record_count(record)
                continue
            self.items.append([record, size])
            self.buffered += size
        if dropped:
            self.count_lost("output", dropped)
        self._notify()

    def put(self, message) -> None:
        self.items.append(message)
        self._notify()

    def count_lost(self, reason: str, count: int) -> None:
        self.pending_lost[reason] = self.pending_lost.get(reason, 0) + count
        self.lost_total[reason] = self.lost_total.get(reason, 0) + count
        self._notify()

    def take(self):
        """The next message to send, or None when there is nothing."""
        if self.pending_lost:
            reason, count = self.pending_lost.popitem()
            return Lost(self.session, reason, count)
        if not self.items:
            return None
        if not isinstance(self.items[0], list):
            return self.items.popleft()
        out: list = []
        size = 0
        items = self.items
        while (
            items
            and isinstance(items[0], list)
            and len(out) < MAX_RECORDS
            and size < MAX_OUTPUT_BYTES
        ):
            record, record_bytes = items.popleft()
            out.append(record)
            size += record_bytes
        self.buffered -= size
        return Output(self.session, tuple(out))

    async def wait(self) -> None:
        """Until something was added since the last ``take`` found nothing (or ``wake``)."""
        if self.pending_lost or self.items:
            return
        await self._changed.wait()

    def wake(self) -> None:
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class Session:
    """One submitted script on the daemon side (see the module docstring)."""

    def __init__(
        self,
        sid: int,
        owner: Peer,
        run: Run,
        program: Program,
        *,
        admin: bool,
        config: Config,
        spawner: WorkerSpawner | None = None,
    ) -> None:
        self.id = sid
        self.spawner = spawner or WorkerSpawner(spare=False)
        self.owner = owner
        self.run_request = run
        self.program = program
        self.admin = admin
        self.config = config
        self.limits = session_limits(config.limits, run.limits)
        self.state = STARTING
        self.created = time.monotonic()
        self.probes = 0
        self.outbox = Outbox(sid, config.output_buffer_bytes)
        self.link = None  # the attached client (ktapd/server.py), if any
        self.discard = False  # nobody may attach any more: drop it once ended
        self.worker_pid: int | None = None
        self.stop_reason: str | None = None
        self._stop = trio.Event()
        self.finished = trio.Event()
        self.result: tuple[bool, str] | None = None
        self._probeset = None  # ktapd.probes.registry.ProbeSet once opened

    @property
    def source(self) -> str:
        return self.program.source_name

    def describe(self) -> dict:
        return {
            "session": self.id,
            "owner": self.owner.uid,
            "state": self.state,
            "attached": self.link is not None,
            "source": self.source,
            "argv": list(self.run_request.argv),
            "probes": self.probes,
            "age_s": int(time.monotonic() - self.created),
        }

    def request_stop(self, reason: str) -> None:
        """Stop tracing (trace_end still runs); the first reason wins."""
        if self.stop_reason is None and not self.finished.is_set():
            self.stop_reason = reason
            if self.state != ENDED:
                self.state = ENDING
            self._stop.set()

    # --- the driver ---------------------------------------------------------------

    async def run(self) -> None:
        """Run the session to its end; errors end this session only."""
        ok, reason, refusal = False, "error", None
        child = _Worker(self)
        try:
            async with trio.open_nursery() as nursery:
                await child.start()
                nursery.start_soon(self._watch_stop, child)
                if self.run_request.trace_pid is not None:
                    nursery.start_soon(self._watch_process, self.run_request.trace_pid)
                ok, reason, refusal = await self._relay(child)
                nursery.cancel_scope.cancel()
            await child.finish()
            if child.died:
                ok, refusal = False, None
                reason = (
                    self.stop_reason if child.killed_by_daemon else f"worker died: {child.died}"
                )
        except Exception as exc:  # a daemon bug must end this session only
            log.exception("session %d failed", self.id)
            ok, reason, refusal = False, f"daemon error: {exc}", None
        finally:
            with trio.CancelScope(shield=True):
                await child.finish()  # also when cancelled: never leave a worker behind
                if self._probeset is not None and self._probeset.has_dynamic_events:
                    # Only now: dynamic events cannot be removed while a
                    # worker holds their fds.  They are removed before the
                    # client hears "ended", so nothing of ours is left in
                    # tracefs once a session is over.
                    await self.release_probes()
            # No checkpoint between here and _finish below: nobody sees
            # `finished` before the state and the outbox say so too.
            self.finished.set()
        if ok:
            # The worker says "finished", "exit" (exit() in the script) or
            # "stopped"; the client wants to know why it stopped.
            reason = self.stop_reason or "finished"
        self._finish(ok, reason, refusal)

    async def release_probes(self) -> None:
        """Close the session's perf fds (and remove its dynamic events).

        Tracepoint fds alone are closed after the client has heard "ended"
        (ktapd/server.py calls this again): the kernel waits for RCU grace
        periods one tracepoint after another, about 25 s for ``syscalls:*``,
        and the person at the terminal should not wait for that."""
        probeset, self._probeset = self._probeset, None
        if probeset is not None:
            await trio.to_thread.run_sync(probeset.close)

    def release_probes_in_background(self) -> None:
        """As release_probes, for a stopping daemon that must not wait: a
        daemon thread closes them, or the process's exit does."""
        probeset, self._probeset = self._probeset, None
        if probeset is not None:
            threading.Thread(target=probeset.close, name="close-probes", daemon=True).start()

    def _finish(self, ok: bool, reason: str, refusal: str | None) -> None:
        self.state = ENDED
        self.result = (ok, reason)
        if refusal is not None:
            self.outbox.put(ErrorMessage(refusal, of="run"))
        else:
            summary = [records.Lost(r, n) for r, n in sorted(self.outbox.lost_total.items()) if n]
            self.outbox.put_records(summary, bounded=False)  # never dropped, unlike output
            self.outbox.put(Ended(self.id, ok, reason))
        log.info("session %d ended: %s", self.id, refusal or reason)

    async def _watch_stop(self, child: _Worker) -> None:
        await self._stop.wait()
        await child.send({"t": "stop"})
        # The worker sees the request between events, or after the main
        # chunk if that is still running.  Nobody reads a vanished client's
        # output, so its session does not get to finish a long main chunk.
        grace = DISCONNECTED_GRACE_S if self.stop_reason == "disconnected" else STOP_GRACE_S
        await trio.sleep(grace)
        log.warning("session %d: worker did not stop in %.0fs, killing it", self.id, grace)
        child.killed_by_daemon = True
        child.kill()

    async def _watch_process(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            self.request_stop("process exited")
            return
        try:
            await trio.lowlevel.wait_readable(fd)
        finally:
            os.close(fd)
        self.request_stop("process exited")

    async def _relay(self, child: _Worker):
        """Worker messages until "done" (or the worker's end): (ok, reason, refusal)."""
        refusal = None
        while True:
            msg = await child.receive()
            if msg is None:
                return False, "error", None
            kind = msg["t"]
            if kind == "output":
                self._relay_records(msg.get("records"))
            elif kind == "lost":
                count = msg.get("count")
                if isinstance(count, int) and count > 0:
                    self.outbox.count_lost(str(msg.get("reason", "ring")), count)
            elif kind == "registered":
                refusal = await self._open_probes(child, msg.get("probes"))
            elif kind == "running":
                self.state = RUNNING if self.stop_reason is None else ENDING
                self.outbox.put(Started(self.id, self.probes))
            elif kind == "mem":
                await self._grant_memory(child, msg.get("pid"))
            elif kind == "done":
                ok = msg.get("ok") is True and refusal is None
                return ok, str(msg.get("reason", "finished")), refusal
            else:
                log.warning("session %d: unexpected worker message %r", self.id, kind)

    async def _grant_memory(self, child: _Worker, pid: object) -> None:
        """user_string() for a worker: a read-only descriptor of task ``pid``'s
        memory, if this session may read it (administrators: any task;
        others: their own).  Permission is checked when /proc/PID/mem is
        opened, so the worker can read that task and nothing else."""
        fd = None
        if type(pid) is int and pid > 0 and (self.admin or _task_uid(pid) == self.owner.uid):
            try:
                fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                fd = None
        try:
            if fd is not None:
                await child.send_fds([fd])
            await child.send({"t": "mem", "pid": pid, "granted": fd is not None})
        finally:
            if fd is not None:
                os.close(fd)

    def _relay_records(self, raw: object) -> None:
        if not isinstance(raw, list):
            return
        batch = []
        for doc in raw:
            try:
                batch.append(record_from_wire(doc))
            except MessageError as exc:
                log.warning("session %d: dropped a bad record from the worker: %s", self.id, exc)
        self.outbox.put_records(batch)

    async def _open_probes(self, child: _Worker, indices: object):
        """Open what the verified program's probe table says for ``indices``."""
        from ktapd.probes.perf_event import ProbeError
        from ktapd.probes.registry import ProbeSet

        probes = self.program.probes
        if not isinstance(indices, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(probes) for i in indices
        ):
            await child.send({"t": "refuse"})
            return "worker asked for probes the program does not have"
        callchain = uses_stacks(self.program)
        # user_string() reads the task's memory when the worker handles the
        # event; the sooner the better (the string may be gone), so such
        # sessions wake their worker on every sample, not every 64 KiB.
        wakeup_bytes = 1 if uses_builtin(self.program, "user_string") else 64 * 1024
        run = self.run_request

        def open_all():
            # The daemon's pid in the group name: an embedded daemon may run
            # beside the system one, each with its own session 1.
            ps = ProbeSet(
                f"ktapd_{os.getpid()}_{self.id}",
                pid=run.trace_pid,
                cpu=run.trace_cpu,
                wakeup_bytes=wakeup_bytes,
            )
            try:
                for index in indices:
                    descs = ps.add_probe(index, probes[index], callchain)
                    check_event_fields(self.program, index, descs)
            except BaseException:
                ps.close()
                raise
            return ps

        try:
            self._probeset = await trio.to_thread.run_sync(open_all)
        except (ProbeError, OSError, ValueError) as exc:
            await child.send({"t": "refuse"})
            return str(exc)
        self.probes = len(self._probeset.descs)
        if self.run_request.verbose:
            self._tell_opened(self._probeset)
        opened = self._probeset.opened
        await child.send_fds(opened.fds)
        await child.send({"t": "probes", "opened": opened.to_wire()})
        return None

    def _tell_opened(self, probeset) -> None:
        """-v: which events are on, and which glob matches the kernel would not open."""
        specs = sorted({d.spec for d in probeset.descs})
        shown = ", ".join(specs[:20]) + (f", ... ({len(specs)} in all)" if len(specs) > 20 else "")
        notes = [
            records.Notice(
                f"opened {len(probeset.opened.fds)} perf events for {len(specs)} event(s): {shown}"
            )
        ]
        notes += [records.Notice(f"skipped {why}") for why in probeset.skipped[:20]]
        self.outbox.put_records(notes)


def _task_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def uses_stacks(program: Program) -> bool:
    """Whether any function calls stack() or ustack(): then samples carry call chains."""
    return uses_builtin(program, "stack", "ustack")


def uses_builtin(program: Program, *names: str) -> bool:
    """Whether any function of ``program`` calls one of these builtins."""
    wanted = {builtins.BUILTIN_BY_NAME[name].id for name in names}
    callb = opcodes.BY_NAME["CALLB"].number
    return any(ins[0] == callb and ins[2] in wanted for f in program.functions for ins in f.code)


def check_event_fields(program: Program, index: int, descs: list) -> None:
    """args.NAME in probe ``index``'s handler must name a field of one of its events."""
    if not any(d.layout is not None for d in descs):
        return  # timers: the VM reports event fields there at run time
    available: set[str] = set()
    for d in descs:
        available.update(d.arg_names)
    for name in sorted(handler_field_names(program, index) - available):
        events = ", ".join(sorted({d.spec for d in descs})[:5])
        raise ValueError(
            f"args.{name}: no such field in {events}; fields: {', '.join(sorted(available)) or '(none)'}"
        )


def handler_field_names(program: Program, index: int) -> set[str]:
    """Names read with args.NAME by the handler(s) REGISTERed for probe ``index``
    (the handler function and the closures it creates)."""
    closure, register, efield = (
        opcodes.BY_NAME[n].number for n in ("CLOSURE", "REGISTER", "EFIELD")
    )
    main = program.functions[0]
    made_by: dict[int, int] = {}  # register -> function index of the last CLOSURE into it
    handlers = []
    for ins in main.code:
        if ins[0] == closure:
            made_by[ins[1]] = ins[2]
        elif ins[0] == register and ins[1] == index and ins[2] in made_by:
            handlers.append(made_by[ins[2]])
    names: set[str] = set()
    seen: set[int] = set()
    while handlers:
        f = handlers.pop()
        if f in seen or not 0 < f < len(program.functions):
            continue
        seen.add(f)
        fn = program.functions[f]
        for ins in fn.code:
            if ins[0] == efield and isinstance(fn.constants[ins[2]], str):
                names.add(fn.constants[ins[2]])
            elif ins[0] == closure:
                handlers.append(ins[2])
    return names


# --- the worker process, seen from the daemon ------------------------------------------


def worker_command(fd: int) -> list[str]:
    """How to start a worker: no_new_privs through setpriv when it exists."""
    cmd = [sys.executable, "-m", "ktapd.worker", "--fd", str(fd)]
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, "--no-new-privs", "--", *cmd]
    log.warning("setpriv (util-linux) not found: workers run without no_new_privs")
    return cmd


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


async def _spawn_worker() -> tuple[trio.Process, socket.socket]:
    """Start a worker process; it imports what it needs, then waits for "start"."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(wire.__file__)))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": root,
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        process = await trio.lowlevel.open_process(
            worker_command(child.fileno()),
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
            cwd="/",
            start_new_session=True,  # the client's Ctrl-C is not the worker's
        )
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    return process, parent


SPARE_NICE = 19  # a spare worker's scheduling priority until it is taken


def _set_nice(pid: int, nice: int) -> None:
    """Set the nice value of (single-threaded) process ``pid``; best effort."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, nice)


class WorkerSpawner:
    """Keeps one worker started ahead of need.

    A worker spends most of a session's start-up importing the VM and the
    probe layer (about 120 ms of CPU here).  A spare that has already done
    so makes the next session start at once.  Once ``start`` has given the
    spawner the daemon's nursery, the first spare starts with the daemon
    and each one taken is replaced in the background, so neither waits on
    a session's path; without a nursery (a Session used on its own),
    ``take`` starts the replacement itself.  The spare has no session, no
    privileges to drop yet and no bytecode: it only waits for "start"
    (ktapd/worker.py), so it holds nothing worth protecting.
    """

    def __init__(self, *, spare: bool = True) -> None:
        self._spare: tuple[trio.Process, socket.socket] | None = None
        self.keep_spare = spare
        self._nursery: trio.Nursery | None = None
        self._refilling = False

    def start(self, nursery: trio.Nursery) -> None:
        """Start the first spare, and from now on replace spares in ``nursery``."""
        self._nursery = nursery
        self._refill_soon()

    async def take(self) -> tuple[trio.Process, socket.socket]:
        spare, self._spare = self._spare, None
        if spare is not None and spare[0].returncode is not None:
            spare[1].close()  # it died waiting (killed by hand, say): start another
            spare = None
        if spare is None:
            spare = await _spawn_worker()
        else:
            _set_nice(spare[0].pid, 0)  # it runs a session now
        if self._nursery is None:
            if self.keep_spare:
                self._spare = await self._new_spare()
        else:
            self._refill_soon()
        return spare

    def _refill_soon(self) -> None:
        if self.keep_spare and self._spare is None and not self._refilling:
            self._refilling = True
            self._nursery.start_soon(self._refill)

    async def _refill(self) -> None:
        try:
            spare = await self._new_spare()
        finally:
            self._refilling = False
        if self._spare is None:
            self._spare = spare
        else:  # cannot happen with one refill at a time; never leak a process
            spare[1].close()

    async def _new_spare(self) -> tuple[trio.Process, socket.socket]:
        spare = await _spawn_worker()
        # The spare imports while sessions run: on a small machine its CPU
        # would delay the very session (and client and workload) it is
        # meant to speed up, so it waits for idle CPU.  Only root can undo
        # a nice value, so only a root daemon lowers it.
        if os.geteuid() == 0:
            _set_nice(spare[0].pid, SPARE_NICE)
        return spare

    async def discard(self) -> None:
        """End the spare (the daemon is stopping) and reap it."""
        spare, self._spare = self._spare, None
        if spare is not None:
            process, sock = spare
            sock.close()  # the worker sees the end of its channel and exits
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


class _Worker:
    """The daemon's end of one worker process and its socketpair."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.reader = wire.FrameReader()
        self.lock = trio.Lock()
        self.process: trio.Process | None = None
        self.sock = None
        self.died: str | None = None
        self.done = False
        self.killed_by_daemon = False  # a stop request was not honoured in time

    async def start(self) -> None:
        self.process, parent = await self.session.spawner.take()
        self.session.worker_pid = self.process.pid
        self.sock = trio.socket.from_stdlib_socket(parent)
        s = self.session
        if os.geteuid() == 0:
            uid, gid, _name = s.config.worker_account()
        else:
            uid, gid = os.getuid(), os.getgid()
        run = s.run_request
        await self.send(
            {
                "t": "start",
                "program": run.program,
                "argv": list(run.argv),
                "limits": {k: getattr(s.limits, k) for k in LIMIT_CEILINGS},
                "admin": s.admin,
                "uid": uid,
                "gid": gid,
                "print_timestamp": run.print_timestamp,
                "dry_run": run.dry_run,
                "verbose": run.verbose,
                "memory_bytes": s.config.worker_memory_bytes,
            }
        )

    async def send(self, doc: dict) -> None:
        await self._send_bytes(wire.pack(doc))

    async def send_fds(self, fds: list[int]) -> None:
        for data, batch in wire.fds_frames(fds):
            await self._send_bytes(data, batch)

    async def _send_bytes(self, data: bytes, fds: list[int] = ()) -> None:
        async with self.lock:
            if self.sock is None:
                return
            try:
                if fds:
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    sent = await self.sock.sendmsg([data], anc)
                else:
                    sent = await self.sock.send(data)
                while sent < len(data):
                    sent += await self.sock.send(data[sent:])
            except OSError:
                pass  # the worker is gone; receive() sees the end

    async def receive(self) -> dict | None:
        """The next message from the worker, or None when it is gone (or broke the wire)."""
        while True:
            try:
                payload = self.reader.next_frame()
                if payload is not None:
                    msg = wire.unpack(payload)
                    if msg["t"] == "done":
                        self.done = True
                    return msg
            except (wire.WireError, ValueError) as exc:
                log.warning("session %d: %s", self.session.id, exc)
                self.kill()
                return None
            try:
                data = await self.sock.recv(wire.RECEIVE_SIZE)
            except OSError:
                data = b""
            if not data:
                return None
            self.reader.feed(data)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass

    async def finish(self) -> None:
        """Wait for the worker to exit (killing it if it lingers); note how it died."""
        if self.process is None or self.sock is None:
            return
        with trio.move_on_after(WORKER_EXIT_GRACE_S if self.done else 0.5):
            await self.process.wait()
        if self.process.returncode is None:
            self.kill()
            with trio.CancelScope(shield=True):
                await self.process.wait()
        self.sock.close()
        self.sock = None
        code = self.process.returncode
        if not self.done:
            self.died = _describe_exit(code)
