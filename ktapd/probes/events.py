"""What an opened event is (EventDesc, plain data) and what a fired one is (Event).

``EventDesc`` is made by the privileged side for every perf event it
opens and travels to the worker as a msgpack-able dict: a caller's tag
(the daemon puts the probe's index in the program there), the kind, the
name scripts see as ``probename``, the ``subsys:name`` spec and the
tracepoint layout.  The worker needs nothing else to decode samples.

``Event`` is one decoded sample, handed to the VM.  It matches the VM's
event-context protocol structurally (probename, pid, tid, cpu, time_ns,
uid, execname, argstr, arg(), field(), kernel_stack(), user_stack(),
read_user_string()).  It is built on the hot path, so construction only
stores references; every field, the comm, the uid and the argstr are
worked out when asked.

``pid`` and ``tid`` are both the thread's kernel pid (as ktap's ``pid``
was, and as the VM's ProcessContext has it); ``tgid`` is the process id.

This module must not open events or touch tracefs.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ktapd.probes import _perf_abi as abi
from ktapd.probes import argstr as _argstr
from ktapd.probes import symbols
from ktapd.probes.formats import Decoder, EventLayout

KIND_TRACEPOINT = "tracepoint"
KIND_UPROBE = "uprobe"
KIND_KPROBE = "kprobe"
KIND_SDT = "sdt"
KIND_FTRACE = "ftrace"
KIND_TICK = "tick"
KIND_PROFILE = "profile"
TIMER_KINDS = (KIND_TICK, KIND_PROFILE)


# Tracepoints declared with __perf_count(x): each hit adds x (a delay in ns)
# to the perf count instead of 1.  With sample_period 1 the kernel would try
# to write x samples per hit (and report millions lost), so these are
# opened with PERF_SAMPLE_PERIOD, which makes it one sample per hit, and
# their kernel count cannot be used for loss accounting.
WEIGHTED_TRACEPOINTS = frozenset({
    "sched:sched_stat_runtime", "sched:sched_stat_wait", "sched:sched_stat_sleep",
    "sched:sched_stat_iowait", "sched:sched_stat_blocked",
})


@dataclass(frozen=True)
class EventDesc:
    tag: int  # chosen by the caller, returned untouched on every Event (the probe index)
    kind: str  # KIND_*
    probename: str  # "sys_enter_openat", the uprobe symbol, "tick-100ms"
    spec: str  # "syscalls:sys_enter_openat", "ktapd_1:main", "cpu-clock"
    layout: EventLayout | None = None  # raw record layout; None for timers
    callchain: bool = False  # samples carry a call chain (stack()/ustack() asked for)
    period_ns: int = 0  # timers: the interval
    weighted: bool = False  # the kernel adds a weight, not 1, per hit: see WEIGHTED_TRACEPOINTS

    @property
    def arg_names(self) -> tuple[str, ...]:
        return self.layout.arg_names if self.layout else ()

    def to_wire(self) -> dict:
        return {"tag": self.tag, "kind": self.kind, "probename": self.probename,
                "spec": self.spec, "callchain": self.callchain, "period_ns": self.period_ns,
                "weighted": self.weighted,
                "layout": self.layout.to_wire() if self.layout else None}

    @classmethod
    def from_wire(cls, doc: dict) -> EventDesc:
        layout = EventLayout.from_wire(doc["layout"]) if doc.get("layout") else None
        return cls(int(doc["tag"]), str(doc["kind"]), str(doc["probename"]), str(doc["spec"]),
                   layout, bool(doc.get("callchain", False)), int(doc.get("period_ns", 0)),
                   bool(doc.get("weighted", False)))


class Target:
    """Worker-side companion of one EventDesc: decoder, argstr renderer, task cache."""

    __slots__ = ("desc", "tag", "probename", "decoder", "render", "raw", "callchain",
                 "weighted", "countable", "fast", "tasks")

    def __init__(self, desc: EventDesc, tasks: TaskCache | None = None):
        self.desc = desc
        self.tag = desc.tag
        self.probename = desc.probename
        self.decoder = Decoder(desc.layout) if desc.layout else None
        self.render = _argstr.renderer(desc.layout) if desc.layout else None
        self.raw = desc.layout is not None
        self.callchain = desc.callchain
        self.weighted = desc.weighted
        # Tracepoint-like events count one per hit, so their fd's count is
        # the exact number of samples the kernel tried to write.
        self.countable = desc.kind not in TIMER_KINDS and not desc.weighted
        # Samples the drain loop can take with its one-unpack fast path.
        self.fast = self.raw and not self.callchain and self.countable  # (so not weighted)
        self.tasks = tasks if tasks is not None else TaskCache()


class TaskCache:
    """Per-tid comm and uid, fed by COMM/FORK records and /proc; bounded."""

    MAX = 65536

    def __init__(self):
        self.comm: dict[int, str] = {}
        self.uid: dict[int, int] = {}

    def prefill(self) -> None:
        """Read the comm of every task now, as perf does at start: a task that
        exits before its samples are read can then still be named."""
        try:
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return
        for pid in pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                comm = _read_proc(f"/proc/{pid}/task/{tid}/comm")
                if comm:
                    self.comm[int(tid)] = comm.rstrip("\n")

    def set_comm(self, tid: int, comm: str) -> None:
        if len(self.comm) >= self.MAX:
            self.comm.clear()
        self.comm[tid] = comm

    def get_comm(self, tid: int, pid: int) -> str:
        comm = self.comm.get(tid)
        if comm is None:
            comm = _read_proc(f"/proc/{pid}/task/{tid}/comm") or _read_proc(f"/proc/{tid}/comm")
            comm = comm.rstrip("\n") if comm else ("swapper" if tid == 0 else "")
            self.set_comm(tid, comm)
        return comm

    def get_uid(self, tid: int) -> int:
        uid = self.uid.get(tid)
        if uid is None:
            uid = -1
            status = _read_proc(f"/proc/{tid}/status")
            for line in (status or "").splitlines():
                if line.startswith("Uid:"):
                    uid = int(line.split()[1])
                    break
            if tid == 0:
                uid = 0
            if len(self.uid) >= self.MAX:
                self.uid.clear()
            self.uid[tid] = uid
        return uid


def _read_proc(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


# Where a fast-path sample keeps its header fields, relative to the start of
# its raw record (perf_event.py's _FAST layout: header, identifier, pid,
# tid, time, cpu, reserved, raw size, raw data).
_TGID_AT, _PID_AT, _TIME_AT, _CPU_AT = -28, -24, -20, -12
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from


class Event:
    """One sample.  The drain loop builds one per sample, so building it only
    stores three references: the target, the buffer holding the record (a
    batch copied out of the ring at once) and where the raw record starts.
    Everything else is read from the buffer when asked, the header fields
    (pid, time, cpu) included: measured, that is 20% cheaper per event than
    unpacking them up front, and most handlers read few of them.

    ``pid`` is the kernel pid of the thread, as ktap had it (``tid`` is the
    same value); ``tgid`` is the process id.  ``time_ns`` is the perf clock
    (local_clock) of the sample; for ticks, CLOCK_MONOTONIC."""

    __slots__ = ("target", "raw", "start")
    chain = None  # EagerEvent carries the sample's call chain

    # No __init__: the drain loop makes ``Event()`` and stores the three
    # slots itself, which is cheaper than passing them to an __init__
    # (measured: about 85 against 140 ns).  Elsewhere, use ``at``.

    @classmethod
    def at(cls, target: Target, raw, start: int) -> Event:
        """The event whose raw record starts at ``raw[start]``."""
        event = cls()
        event.target, event.raw, event.start = target, raw, start
        return event

    @property
    def tgid(self) -> int:
        return _U32(self.raw, self.start + _TGID_AT)[0]

    @property
    def pid(self) -> int:
        return _U32(self.raw, self.start + _PID_AT)[0]

    @property
    def tid(self) -> int:
        return self.pid

    @property
    def time_ns(self) -> int:
        return _U64(self.raw, self.start + _TIME_AT)[0]

    @property
    def cpu(self) -> int:
        return _U32(self.raw, self.start + _CPU_AT)[0]

    @staticmethod
    def make(target: Target, tgid: int, tid: int, time_ns: int, cpu: int, raw,
             chain=None) -> Event:
        """An event whose header fields are given (slow path, timers)."""
        event = EagerEvent.at(target, raw, 0)
        event.tgid, event.pid, event.time_ns, event.cpu = tgid, tid, time_ns, cpu
        event.chain = chain
        return event

    @property
    def tag(self) -> int:
        return self.target.tag

    @property
    def desc(self) -> EventDesc:
        return self.target.desc

    @property
    def probename(self) -> str:
        return self.target.probename

    @property
    def execname(self) -> str:
        return self.target.tasks.get_comm(self.pid, self.tgid)

    @property
    def uid(self) -> int:
        return self.target.tasks.get_uid(self.pid)

    @property
    def argstr(self) -> str:
        target = self.target
        if target.render is None:
            return target.probename
        return target.render(target.decoder, self.raw, self.start)

    def arg(self, n: int):
        decoder = self.target.decoder
        if decoder is None:
            return None
        return decoder.arg(self.raw, self.start, n)

    def field(self, name: str):
        decoder = self.target.decoder
        if decoder is None:
            raise KeyError(name)
        return decoder.field(self.raw, self.start, name)

    def _split_chain(self) -> tuple[list[int], list[int]]:
        kernel, user, where = [], [], None
        for ip in self.chain or ():
            if ip >= abi.PERF_CONTEXT_MAX:
                where = user if ip == abi.PERF_CONTEXT_USER else (
                    kernel if ip == abi.PERF_CONTEXT_KERNEL else None)
            elif where is not None:
                where.append(ip)
        return kernel, user

    def kernel_stack(self) -> list[str]:
        return [symbols.kernel_symbol(ip) for ip in self._split_chain()[0]]

    def user_stack(self) -> list[str]:
        ips = self._split_chain()[1]
        if not ips:
            return []
        sym = symbols.user_symbolizer(self.tgid)
        return [sym.symbol(ip) for ip in ips]

    def read_user_string(self, addr: int, limit: int) -> str | None:
        return read_user_string(self.tgid, addr, limit)

    def __repr__(self) -> str:
        return (f"<Event {self.desc.spec} tgid={self.tgid} tid={self.pid} cpu={self.cpu} "
                f"t={self.time_ns}>")


class EagerEvent(Event):
    """An event with its header fields stored: samples the drain loop's fast
    path does not take (call chains: PERF_SAMPLE_CALLCHAIN) and ticks."""

    __slots__ = ("tgid", "pid", "time_ns", "cpu", "chain")


def read_user_string(pid: int, addr: int, limit: int) -> str | None:
    """A NUL-terminated string at ``addr`` in process ``pid``, at most ``limit`` bytes;
    None if the memory is unreadable."""
    return read_c_string(lambda at, size: abi.process_vm_readv(pid, at, size), addr, limit)


def read_c_string(read: Callable[[int, int], bytes], addr: int, limit: int) -> str | None:
    """A NUL-terminated string at ``addr``, at most ``limit`` bytes, read with
    ``read(address, size)`` (which returns b"" or raises OSError where memory
    is unreadable); None if nothing at all could be read.

    Reads page by page, so a string that ends just before an unmapped page
    is still found."""
    if addr <= 0 or limit <= 0:
        return None
    data = b""
    while len(data) < limit:
        at = addr + len(data)
        try:
            part = read(at, min(limit - len(data), 4096 - (at & 4095)))
        except (OSError, OverflowError):
            part = b""
        if not part:
            if not data:
                return None
            break
        end = part.find(b"\0")
        if end >= 0:
            data += part[:end]
            break
        data += part
    return data[:limit].decode("utf-8", "replace")
