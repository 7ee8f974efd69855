"""perf events: opening them (privileged half) and reading their rings (worker half).

Privileged half.  ``EventOpener`` opens one perf event per CPU (per task
and CPU for ``-p``/``-- cmd``, with inherit so children count: the kernel
will not map an inherited event with cpu -1), disabled, and applies the
kernel filter with PERF_EVENT_IOC_SET_FILTER.  It picks one ring-owning
event per CPU; the others will write into that ring, so a session with
700 syscall events still has one ring per CPU.  The result,
``OpenedEvents``, is plain data plus file descriptors: the descs and a
per-fd (desc index, ring owner) table travel as msgpack, the fds by
SCM_RIGHTS.  The ring owners also ask for COMM, FORK and EXIT records.

Worker half.  ``RingSet`` mmaps the ring owners (1 + 2^n pages each), then
redirects the other events into them (PERF_EVENT_IOC_SET_OUTPUT needs the
target already mapped), and drains them: read ``data_head``, parse
records up to it (a record may wrap around the end of the ring: then it is
copied out in two parts), then store ``data_tail``.  On x86-64 loads are not reordered with older loads
and stores are not reordered with older loads, and every Python step is a
compiler barrier, so "read head, then read records, then write tail" is
the ordering the perf ABI asks for without explicit fences.

Every sample starts with PERF_SAMPLE_IDENTIFIER, so one dict lookup maps
it to its event's ``Target`` (decoder, tag) whatever ring it came through.
Losses: PERF_RECORD_LOST records are summed as they come; ``finish()``
also compares each countable event's kernel count with the samples seen,
because the kernel writes a LOST record only when a later record fits
(perf-anchors.md, "Loss accounting caveat").

This module must not know about sessions, the VM or tracefs.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import struct
import threading
import time
from dataclasses import dataclass, field

from ktapd.probes import _perf_abi as abi
from ktapd.probes.events import KIND_TICK, Event, EventDesc, Target, TaskCache


class ProbeError(Exception):
    """A probe cannot be opened: the message says which and why, for the user."""


# --- privileged half ------------------------------------------------------------------

_SAMPLE_BASE = abi.PERF_SAMPLE_IDENTIFIER | abi.PERF_SAMPLE_TID | abi.PERF_SAMPLE_TIME | \
    abi.PERF_SAMPLE_CPU


def online_cpus() -> list[int]:
    try:
        text = open("/sys/devices/system/cpu/online").read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def check_filter_text(text: str) -> None:
    """Refuse filter text the kernel should never see (control characters, huge)."""
    if len(text) > 4096:
        raise ProbeError("filter is longer than 4096 characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ProbeError(f"filter {text!r} contains control characters")


@dataclass
class OpenedEvents:
    """Opened perf fds with what the worker needs to read them.

    ``slots[i] = (desc index, ring owner)`` describes ``fds[i]``: the ring
    owner is the position in ``fds`` of the event whose ring it writes to
    (``i`` itself for an event that owns a ring)."""

    fds: list[int] = field(default_factory=list)
    slots: list[tuple[int, int]] = field(default_factory=list)
    descs: list[EventDesc] = field(default_factory=list)

    def to_wire(self) -> dict:
        """Everything but the fds (they go by SCM_RIGHTS, in ``fds`` order)."""
        return {"slots": [list(s) for s in self.slots],
                "descs": [d.to_wire() for d in self.descs]}

    @classmethod
    def from_wire(cls, doc: dict, fds: list[int]) -> OpenedEvents:
        slots = [(int(i), int(o)) for i, o in doc["slots"]]
        if len(slots) != len(fds):
            raise ValueError(f"{len(fds)} fds for {len(slots)} slots")
        if any(not 0 <= o < len(fds) or slots[o][1] != o for _i, o in slots):
            raise ValueError("a slot names a ring owner that does not own a ring")
        return cls(list(fds), slots, [EventDesc.from_wire(d) for d in doc["descs"]])

    def enable(self) -> None:
        for fd in self.fds:
            abi.ioctl_int(fd, abi.PERF_EVENT_IOC_ENABLE)

    def disable(self) -> None:
        for fd in self.fds:
            try:
                abi.ioctl_int(fd, abi.PERF_EVENT_IOC_DISABLE)
            except OSError:
                pass

    def close(self) -> None:
        """Close every fd.

        Slow for many tracepoints: closing the last perf event of a
        tracepoint makes the kernel wait for RCU grace periods under
        event_mutex (tracepoint_synchronize_unregister), about 40 ms each
        here, one after the other: ``syscalls:*`` takes ~25 s, ``*:*`` ~90 s,
        and threads do not help.  Callers on an event loop should run this
        in a worker thread and not wait for it to answer the client."""
        fds, self.fds, self.slots = self.fds, [], []
        for fd in fds:
            _close_quietly(fd)


# Wake the reader once this much is waiting in a ring (the kernel clamps
# it to the ring size).  Small, because wake-ups are late anyway (see
# RingSet.wait_limit): waking at every timer tick is the best there is.
DEFAULT_WAKEUP_BYTES = 16 * 1024


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class EventOpener:
    """Opens perf events for one tracing run (root); all share one ring per CPU.

    ``pid``: trace one task and its children (per-task, per-CPU events with
    inherit=1).
    ``cpu``: only that CPU.  Neither: every online CPU, system-wide."""

    def __init__(self, *, pid: int | None = None, cpu: int | None = None,
                 wakeup_bytes: int = DEFAULT_WAKEUP_BYTES):
        self.pid = pid
        self.cpu = cpu
        self.wakeup_bytes = wakeup_bytes
        self.opened = OpenedEvents()
        # (cpu or -1, pid or desc index) -> position in opened.fds of the ring owner
        self._owners: dict[tuple[int, int], int] = {}

    def _cpus(self) -> list[int]:
        # Per-task events are opened per CPU too: the kernel refuses to mmap
        # an inherited event with cpu == -1, and children must count.
        if self.cpu is not None:
            return [self.cpu]
        return online_cpus()

    def add(self, desc: EventDesc, *, type: int, config: int, sample_period: int = 1,
            filter: str | None = None, config1: int = 0, config2: int = 0,
            cpus: list[int] | None = None, system_wide: bool = False,
            own_ring: bool = False) -> int:
        """Open ``desc``'s event on every CPU (or the task); returns fds opened.

        ``cpus`` overrides the CPU list; ``system_wide`` ignores ``pid``;
        ``own_ring`` gives the event rings of its own that wake the reader
        on every sample (timers: a tick must not wait for a watermark)."""
        if filter is not None:
            check_filter_text(filter)
        sample_type = _SAMPLE_BASE
        if desc.layout is not None:
            sample_type |= abi.PERF_SAMPLE_RAW
        if desc.callchain:
            sample_type |= abi.PERF_SAMPLE_CALLCHAIN
        if desc.weighted:
            sample_type |= abi.PERF_SAMPLE_PERIOD
        index = len(self.opened.descs)
        self.opened.descs.append(desc)
        pid = -1 if self.pid is None or system_wide else self.pid
        if cpus is None:
            cpus = self._cpus()
        opened = 0
        for cpu in cpus:
            key = (cpu, index) if own_ring else (cpu, pid)
            owner = self._owners.get(key)
            flags = ["disabled", "sample_id_all"]
            if pid != -1:
                flags.append("inherit")
            if owner is None:
                flags += ["comm", "task"]
                if not own_ring:
                    flags.append("watermark")
            attr = abi.pack_attr(type=type, config=config, sample_period=sample_period,
                                 sample_type=sample_type, flags=abi.attr_flags(*flags),
                                 wakeup_watermark=1 if own_ring else self.wakeup_bytes,
                                 config1=config1, config2=config2,
                                 sample_max_stack=127 if desc.callchain else 0)
            try:
                fd = abi.perf_event_open(attr, pid, cpu)
            except OSError as exc:
                raise ProbeError(_open_error(desc, exc, pid, cpu)) from None
            if filter:
                try:
                    abi.ioctl_set_filter(fd, filter)
                except OSError as exc:
                    os.close(fd)
                    raise ProbeError(f"the kernel rejected filter /{filter}/ on event "
                                     f"{desc.spec}: {exc.strerror}") from None
            position = len(self.opened.fds)
            if owner is None:
                owner = self._owners[key] = position
            self.opened.fds.append(fd)
            self.opened.slots.append((index, owner))
            opened += 1
        return opened

    def close(self) -> None:
        self.opened.close()
        self._owners.clear()


def _open_error(desc: EventDesc, exc: OSError, pid: int, cpu: int) -> str:
    where = f"task {pid}" if pid != -1 else f"cpu {cpu}"
    reason = exc.strerror
    if exc.errno == errno.ESRCH:
        reason = f"no such process {pid}"
    elif exc.errno == errno.ENOENT:
        reason = "this kernel has no such event"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        reason = "permission denied (needs CAP_PERFMON or root)"
    elif exc.errno == errno.EMFILE:
        reason = "too many open files (raise RLIMIT_NOFILE or trace fewer events)"
    return f"cannot open event {desc.spec} on {where}: {reason}"


# --- worker half ------------------------------------------------------------------------

_HEADER = struct.Struct("<IHH")
_SAMPLE_HEAD = struct.Struct("<QIIQI")  # identifier, pid, tid, time, cpu (+4 reserved)
_SAMPLE_HEAD_SIZE = 8 + 32
# A tracepoint sample without call chain: header, identifier, pid, tid,
# time, cpu, reserved, raw size, then the raw record at _FAST_SIZE (Event
# reads the header fields back from these offsets).
_FAST = struct.Struct("<IHHQIIQI4xI")
_FAST_SIZE = _FAST.size
_FAST_HEAD = struct.Struct("<IHHQ")  # what the drain loop itself reads: header, identifier
# Copy the ring out in slices of this size: larger ones come from fresh
# mmap()ed memory every time (glibc's threshold is 128 KiB) and their page
# faults cost more than the copy.  A record may be up to 64 KiB.
_CHUNK = 64 * 1024
# record size -> iter_unpack of each record's first 16 bytes (header, identifier)
_RUN_UNPACKERS: dict = {}
# Distinct (header, identifier) keys remembered: a few per event (the
# header's misc bits vary); the bound only guards against junk.
_MAX_FAST_KEYS = 1024
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_LOST = struct.Struct("<QQ")
_PIDS = struct.Struct("<II")
_EXIT = struct.Struct("<IIII")
_SAMPLE = abi.PERF_RECORD_SAMPLE
_PAGE = mmap.PAGESIZE


# 128 pages (512 KiB) per CPU.  Workers of all sessions share one user's
# locked-memory budget (perf_event_mlock_kb per CPU, then RLIMIT_MEMLOCK),
# so rings are sized for a burst of about 10k events, not for more.
DEFAULT_PAGES = 128


class Ring:
    """One mmapped perf ring buffer: control page + 2^n data pages."""

    def __init__(self, fd: int, pages: int):
        if pages < 1 or pages & (pages - 1):
            raise ValueError("ring pages must be a power of two")
        self.fd = fd
        self.mm = mmap.mmap(fd, (1 + pages) * _PAGE, mmap.MAP_SHARED,
                            mmap.PROT_READ | mmap.PROT_WRITE)
        self.size = pages * _PAGE
        self.tail = _U64.unpack_from(self.mm, abi.MMAP_DATA_TAIL)[0]

    def close(self) -> None:
        self.mm.close()


class RingSet:
    """The worker's view of an OpenedEvents: rings, decoding, loss and task bookkeeping.

    ``drain(handler)`` calls ``handler(event)`` for every sample waiting in
    every ring and returns how many it delivered.  ``fileno()``s are
    readable when a ring passed its watermark (or its event ended)."""

    def __init__(self, opened: OpenedEvents, pages: int = DEFAULT_PAGES):
        self.opened = opened
        self.tasks = TaskCache()
        self.targets_by_desc = [Target(d, self.tasks) for d in opened.descs]
        self.targets: dict[int, Target] = {}  # sample identifier -> target
        self.fast_targets: dict[int, Target] = {}  # the ones the drain's fast path takes
        # a fast sample's first 16 bytes (header, identifier) -> (target,
        # record size): see _drain_ring
        self._fast_keys: dict[bytes, tuple[Target, int]] = {}
        self.rings: list[Ring] = []
        self.lost = 0  # samples the kernel reported lost so far (PERF_RECORD_LOST)
        self.delivered = 0
        self.counted_seen = 0  # samples of countable events delivered
        self.exited: set[int] = set()  # process ids whose main thread exited
        self._last_batch = 0
        try:
            # The kernel redirects output only to a ring that is already mapped:
            # map the owners first, then point the others at them.
            for position, (fd, (_index, owner)) in enumerate(
                    zip(opened.fds, opened.slots, strict=True)):
                if owner == position:
                    self.rings.append(Ring(fd, pages))
            for position, (fd, (index, owner)) in enumerate(
                    zip(opened.fds, opened.slots, strict=True)):
                ident = abi.ioctl_event_id(fd)
                self.targets[ident] = target = self.targets_by_desc[index]
                if target.fast:
                    self.fast_targets[ident] = target
                if owner != position:
                    abi.ioctl_int(fd, abi.PERF_EVENT_IOC_SET_OUTPUT, opened.fds[owner])
        except BaseException:
            self.close()
            raise
        # tick-N timers have no perf event: a timerfd each (timers.py).
        self.timers: list[tuple[int, Target]] = []
        for target in self.targets_by_desc:
            if target.desc.kind == KIND_TICK:
                self.timers.append((abi.timerfd_create(), target))
        self.tasks.prefill()
        self._poll = select.poll()
        for fd in self.filenos():
            self._poll.register(fd, select.POLLIN)

    def filenos(self) -> list[int]:
        """Descriptors to wait on (readable: a ring passed its watermark, a tick fired)."""
        return [r.fd for r in self.rings] + [fd for fd, _t in self.timers]

    def wait_limit(self, timeout: float | None) -> float | None:
        """How long a reader should wait for readability before draining anyway.

        Watermark wake-ups arrive through irq_work, which on these VMs only
        runs at the next timer tick: measured gaps reach 28 ms, long enough
        for a 512 KiB ring to overflow at 500k events/s.  So while events
        stream in (the last drain found many), wait at most BUSY_WAIT and
        drain again; when idle, wait ``timeout``.  A trio reader should use
        this as its ``wait_readable`` deadline."""
        if self._last_batch >= BUSY_BATCH:
            return BUSY_WAIT if timeout is None else min(timeout, BUSY_WAIT)
        return timeout

    def poll(self, timeout: float | None) -> bool:
        """Wait until something is readable, at most ``wait_limit(timeout)``
        seconds (None: no limit); True if something is."""
        limit = self.wait_limit(timeout)
        ms = None if limit is None else max(0, int(limit * 1000))
        return bool(self._poll.poll(ms))

    def enable(self) -> None:
        self.opened.enable()
        for fd, target in self.timers:
            abi.timerfd_settime(fd, target.desc.period_ns)

    def disable(self) -> None:
        for fd, _target in self.timers:
            abi.timerfd_settime(fd, 0)
        self.opened.disable()

    def drain(self, handler) -> int:
        """Deliver every sample waiting when called (and every due tick) to
        ``handler``; returns how many."""
        n = 0
        for ring in self.rings:
            n += self._drain_ring(ring, handler)
        self._last_batch = n
        if self.timers:
            n += self._drain_timers(handler)
        self.delivered += n
        return n

    def _drain_timers(self, handler) -> int:
        n = 0
        for fd, target in self.timers:
            try:
                expirations = _U64.unpack(os.read(fd, 8))[0]
            except BlockingIOError:
                continue
            # A reader that fell far behind gets a bounded burst, not thousands.
            for _ in range(min(expirations, MAX_TICK_BURST)):
                pid = os.getpid()
                handler(Event.make(target, pid, threading.get_native_id(), time.monotonic_ns(),
                                   abi.current_cpu(), None))
                n += 1
        return n

    def _drain_ring(self, ring: Ring, handler) -> int:
        # The hot loop.  What lies between tail and head is copied out in
        # slices of up to _CHUNK bytes; events point into those copies, so
        # the kernel may reuse the ring as soon as the tail moves and no
        # per-event copy is needed.  A tracepoint sample is known by its
        # first 16 bytes (header and identifier: ``_fast_keys``), which
        # give its target and size at once.  Samples mostly come in runs
        # of the same key: then one iter_unpack walks the run, and per
        # sample the loop does one compare and builds a three-reference
        # Event.  A lone sample (events of different sizes interleaved)
        # costs a dict lookup more.  Anything else (call chains, timers,
        # side-band records, a sample whose key is new) takes
        # _slow_record, and so does a record wrapping around the end.  A
        # record counts as consumed before its handler runs, so a handler
        # that raises loses its own event, never replays earlier ones.
        mm, size, mask, base = ring.mm, ring.size, ring.size - 1, _PAGE
        keys = self._fast_keys
        lookup = keys.get
        runs = _RUN_UNPACKERS
        event_cls = Event
        fast_size = _FAST_SIZE
        n = counted = pos = 0
        tail = chunk_tail = ring.tail
        try:
            head = _U64.unpack_from(mm, abi.MMAP_DATA_HEAD)[0]
            # Everything up to this head is drained; after that, go on only
            # while a whole chunk has come in meanwhile.  Chasing the head
            # record by record while events stream in made chunks of a few
            # records, whose fixed costs doubled the CPU per event (measured:
            # 6 records a chunk at 1M events/s); what is left waits for the
            # next drain (RingSet.wait_limit bounds that wait).
            while head > tail:  # (never below, unless the control page is clobbered)
                while tail < head:
                    off = tail & mask
                    span = min(head - tail, size - off, _CHUNK)
                    chunk = mm[base + off:base + off + span]
                    chunk_tail, pos = tail, 0
                    fast_end = span - fast_size
                    while pos < span:
                        if pos <= fast_end:
                            key = chunk[pos:pos + 16]
                            known = lookup(key)
                            if known is not None and pos + known[1] <= span:
                                target, rsize = known
                                if not chunk.startswith(key, pos + rsize):
                                    # A lone sample: the next record differs.
                                    ev = event_cls()
                                    ev.target = target
                                    ev.raw = chunk
                                    ev.start = pos + fast_size
                                    pos += rsize
                                    counted += 1
                                    handler(ev)
                                    continue
                                # A run: ``start`` is where the current record's
                                # raw data begins; all before it is consumed.
                                start = pos + fast_size - rsize
                                last = key
                                try:
                                    for (key,) in runs[rsize](
                                            memoryview(chunk)[pos:pos + (span - pos) // rsize * rsize]):
                                        start += rsize
                                        if key != last:  # another event or misc: still this size?
                                            known = lookup(key)
                                            if known is None or known[1] != rsize:
                                                break
                                            target, last = known[0], key
                                        # (no __init__: cheaper than Event(...), measured)
                                        ev = event_cls()
                                        ev.target = target
                                        ev.raw = chunk
                                        ev.start = start
                                        handler(ev)
                                    else:
                                        start += rsize
                                except BaseException:
                                    start += rsize  # the raising handler's record is consumed
                                    raise
                                finally:
                                    counted += (start - fast_size - pos) // rsize
                                    pos = start - fast_size
                                continue
                        rsize = _HEADER.unpack_from(chunk, pos)[2]
                        if rsize < _HEADER.size:  # never from the kernel: skip, do not spin
                            rsize = span - pos
                        if pos + rsize > span:
                            break  # runs past the chunk: the next chunk starts with it
                        if pos <= fast_end and self._learn_key(chunk, pos, rsize):
                            continue  # a first sample of its kind: now the fast path takes it
                        pos += rsize
                        n += self._slow_record(chunk, pos - rsize, rsize, handler)
                    tail = chunk_tail + pos
                    if pos == 0:  # a first record that does not fit: it wraps around
                        # the ring's end (or is larger than a chunk): copy it alone
                        rsize = max(_HEADER.unpack_from(mm, base + off)[2], _HEADER.size)
                        if off + rsize <= size:
                            record = mm[base + off:base + off + rsize]
                        else:
                            record = mm[base + off:base + size] + mm[base:base + off + rsize - size]
                        tail += rsize
                        n += self._slow_record(record, 0, rsize, handler)
                    chunk_tail, pos = tail, 0
                # Done with everything up to head: give the space back to the kernel.
                _U64.pack_into(mm, abi.MMAP_DATA_TAIL, tail)
                head = _U64.unpack_from(mm, abi.MMAP_DATA_HEAD)[0]
                if head - tail < _CHUNK:
                    break
        finally:
            tail = max(tail, chunk_tail + pos)  # a handler raised: keep what was consumed
            _U64.pack_into(mm, abi.MMAP_DATA_TAIL, tail)
            ring.tail = tail
            self.counted_seen += counted
        return n + counted

    def _learn_key(self, chunk: bytes, pos: int, rsize: int) -> bool:
        """If the record at ``chunk[pos]`` is a sample the fast path can take
        but its key is new, remember the key (and an unpacker for runs of
        its size); True if so."""
        rtype, _misc, _size, ident = _FAST_HEAD.unpack_from(chunk, pos)
        target = self.fast_targets.get(ident)
        if rtype != _SAMPLE or target is None or rsize < _FAST_SIZE:
            return False
        key = chunk[pos:pos + 16]
        if key in self._fast_keys:
            return False
        if len(self._fast_keys) >= _MAX_FAST_KEYS:
            self._fast_keys.clear()
        self._fast_keys[key] = (target, rsize)
        if rsize not in _RUN_UNPACKERS:
            _RUN_UNPACKERS[rsize] = struct.Struct(f"<16s{rsize - 16}x").iter_unpack
        return True

    def _slow_record(self, buf, pos: int, rsize: int, handler) -> int:
        """Handle one record at ``buf[pos:pos + rsize]`` that the fast path did
        not take; returns the number of samples delivered (0 or 1)."""
        rtype, misc, _size = _HEADER.unpack_from(buf, pos)
        if rtype != _SAMPLE:
            self._side_record(rtype, misc, buf, pos, rsize)
            return 0
        ident, pid, tid, time_ns, cpu = _SAMPLE_HEAD.unpack_from(buf, pos + 8)
        target = self.targets.get(ident)
        if target is None:
            return 0
        if target.countable:
            self.counted_seen += 1
        if target.fast:  # a wrapped record, now contiguous: same layout as the fast path
            handler(Event.at(target, bytes(buf[pos:pos + rsize]), _FAST_SIZE))
            return 1
        p = pos + _SAMPLE_HEAD_SIZE
        if target.weighted:
            p += 8  # PERF_SAMPLE_PERIOD
        chain = None
        if target.callchain:
            nr = _U64.unpack_from(buf, p)[0]
            chain = struct.unpack_from(f"<{nr}Q", buf, p + 8)
            p += 8 + 8 * nr
        raw = None
        if target.raw:
            rawsize = _U32.unpack_from(buf, p)[0]
            raw = bytes(buf[p + 4:p + 4 + rawsize])
        handler(Event.make(target, pid, tid, time_ns, cpu, raw, chain))
        return 1

    def _side_record(self, rtype: int, misc: int, buf, pos: int, rsize: int) -> None:
        if rtype == abi.PERF_RECORD_LOST:
            self.lost += _LOST.unpack_from(buf, pos + 8)[1]
        elif rtype == abi.PERF_RECORD_LOST_SAMPLES:
            self.lost += _U64.unpack_from(buf, pos + 8)[0]
        elif rtype == abi.PERF_RECORD_COMM:
            _pid, tid = _PIDS.unpack_from(buf, pos + 8)
            end = bytes(buf[pos + 16:pos + rsize]).find(b"\0")
            self.tasks.set_comm(tid, bytes(buf[pos + 16:pos + 16 + max(end, 0)]).decode(
                "utf-8", "replace"))
        elif rtype == abi.PERF_RECORD_FORK:
            pid, ppid, tid, ptid = _EXIT.unpack_from(buf, pos + 8)
            parent = self.tasks.comm.get(ptid)
            if parent is not None:
                self.tasks.set_comm(tid, parent)
        elif rtype == abi.PERF_RECORD_EXIT:
            pid, _ppid, tid, _ptid = _EXIT.unpack_from(buf, pos + 8)
            if pid == tid:
                if len(self.exited) > 65536:
                    self.exited.clear()
                self.exited.add(pid)

    def kernel_counts(self) -> int:
        """Sum of the kernel's hit counts over the countable events (all CPUs)."""
        total = 0
        for fd, (index, _owns) in zip(self.opened.fds, self.opened.slots, strict=True):
            if self.targets_by_desc[index].countable:
                try:
                    total += _U64.unpack(os.read(fd, 8))[0]
                except OSError:
                    pass
        return total

    def finish(self, handler) -> int:
        """Stop: disable every event, drain what is left, settle the loss count.

        Returns the number of samples delivered by the final drain.  After
        it, ``lost`` is exact for tracepoint-like events: the kernel's own
        hit counts minus the samples seen, when that is more than the LOST
        records said."""
        n = self._drain_timers(handler) if self.timers else 0  # disarming drops expirations
        self.disable()
        n += self.drain(handler)
        unseen = self.kernel_counts() - self.counted_seen
        if unseen > self.lost:
            self.lost = unseen
        return n

    def close(self) -> None:
        """Unmap the rings and close the event fds (idempotent: in-process, the
        OpenedEvents is shared with the opener and closes its fds once)."""
        for ring in self.rings:
            ring.close()
        self.rings = []
        for fd, _target in getattr(self, "timers", ()):
            os.close(fd)
        self.timers = []
        self.opened.close()


MAX_TICK_BURST = 16
BUSY_BATCH = 256  # samples in one drain that mean "events are streaming"
BUSY_WAIT = 0.001  # seconds between drains while they stream
