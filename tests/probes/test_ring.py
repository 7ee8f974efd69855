"""The ring-buffer drain loop on a hand-built ring in memory: samples, records
that wrap around the end, LOST/COMM/FORK/EXIT records, tail bookkeeping.

RingSet normally maps perf fds; here its rings are bytearrays laid out as
the kernel lays out a perf mmap (control page, then the data pages)."""

from __future__ import annotations

import mmap
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from ktapd.probes import _perf_abi as abi
from ktapd.probes.events import EventDesc, Target, TaskCache
from ktapd.probes.formats import parse_format
from ktapd.probes.perf_event import OpenedEvents, Ring, RingSet

PAGE = mmap.PAGESIZE
GETPPID = parse_format("""name: sys_enter_getppid
ID: 305
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
""", "syscalls")


def _sample(ident: int, pid: int, tid: int, time_ns: int, cpu: int, raw: bytes,
            chain: tuple[int, ...] | None = None) -> bytes:
    body = struct.pack("<QIIQII", ident, pid, tid, time_ns, cpu, 0)
    if chain is not None:
        body += struct.pack(f"<Q{len(chain)}Q", len(chain), *chain)
    body += struct.pack("<I", len(raw)) + raw
    body += b"\0" * (-(8 + len(body)) % 8)
    return struct.pack("<IHH", abi.PERF_RECORD_SAMPLE, 0, 8 + len(body)) + body


def _record(rtype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 8)
    return struct.pack("<IHH", rtype, 0, 8 + len(body)) + body


class FakeRing(Ring):
    def __init__(self, pages: int, start: int):
        self.fd = -1
        self.mm = mmap.mmap(-1, (1 + pages) * PAGE)  # slices are bytes, as from a perf mmap
        self.size = pages * PAGE
        self.tail = start
        self.head = start
        struct.pack_into("<Q", self.mm, abi.MMAP_DATA_TAIL, start)
        struct.pack_into("<Q", self.mm, abi.MMAP_DATA_HEAD, start)

    def write(self, record: bytes) -> None:
        for i, byte in enumerate(record):
            self.mm[PAGE + (self.head + i) % self.size] = byte
        self.head += len(record)
        struct.pack_into("<Q", self.mm, abi.MMAP_DATA_HEAD, self.head)

    def close(self) -> None:
        pass


def _ringset(ring: FakeRing, descs: list[EventDesc], ids: list[int]) -> RingSet:
    rs = RingSet.__new__(RingSet)
    rs.opened = OpenedEvents([], [], descs)
    rs.tasks = TaskCache()
    rs.targets_by_desc = [Target(d, rs.tasks) for d in descs]
    rs.targets = dict(zip(ids, rs.targets_by_desc, strict=True))
    rs.fast_targets = {i: t for i, t in rs.targets.items() if t.fast}
    rs._fast_keys = {}
    rs.rings = [ring]
    rs.timers = []
    rs.lost = rs.delivered = rs.counted_seen = 0
    rs.exited = set()
    return rs


def test_samples_lost_and_wrapping_records():
    ring = FakeRing(pages=1, start=PAGE - 24)  # the first sample straddles the end
    desc = EventDesc(7, "tracepoint", "sys_enter_getppid", "syscalls:sys_enter_getppid", GETPPID)
    rs = _ringset(ring, [desc], [1001])
    raw = struct.pack("<HBBii", 305, 0, 0, 55, 110)
    for i in range(3):
        ring.write(_sample(1001, 55, 56, 1000 + i, 1, raw))
    ring.write(_record(abi.PERF_RECORD_LOST, struct.pack("<QQ", 1001, 17)))
    ring.write(_sample(9999, 1, 1, 1, 0, raw))  # unknown id: skipped, not a crash
    ring.write(_record(abi.PERF_RECORD_COMM, struct.pack("<II", 55, 56) + b"worker\0"))
    ring.write(_record(abi.PERF_RECORD_FORK, struct.pack("<IIIIQ", 60, 55, 60, 56, 5)))
    ring.write(_record(abi.PERF_RECORD_EXIT, struct.pack("<IIIIQ", 55, 1, 55, 1, 9)))
    seen = []
    assert rs.drain(seen.append) == 3
    assert [e.time_ns for e in seen] == [1000, 1001, 1002]
    first = seen[0]
    assert (first.tag, first.tgid, first.pid, first.tid, first.cpu, first.probename) == (
        7, 55, 56, 56, 1, "sys_enter_getppid")  # pid is the thread's kernel pid, as in ktap
    assert first.arg(0) == 110
    assert first.argstr == "sys_getppid()"
    assert rs.lost == 17
    assert rs.tasks.comm[56] == "worker" and seen[0].execname == "worker"
    assert rs.tasks.comm[60] == "worker"  # the forked child inherits the comm
    assert 55 in rs.exited
    assert struct.unpack_from("<Q", ring.mm, abi.MMAP_DATA_TAIL)[0] == ring.head
    assert rs.drain(seen.append) == 0  # nothing new


def test_callchain_and_no_raw():
    ring = FakeRing(pages=1, start=0)
    desc = EventDesc(1, "profile", "profile-1ms", "cpu-clock", None, callchain=True)
    rs = _ringset(ring, [desc], [5])
    chain = (abi.PERF_CONTEXT_KERNEL, 0xFFFFFFFF81000010, abi.PERF_CONTEXT_USER, 0x401000)
    body = struct.pack("<QIIQII", 5, 3, 3, 77, 0, 0) + struct.pack("<Q4Q", 4, *chain)
    ring.write(struct.pack("<IHH", abi.PERF_RECORD_SAMPLE, 0, 8 + len(body)) + body)
    seen = []
    assert rs.drain(seen.append) == 1
    event = seen[0]
    assert event.chain == chain
    assert event.arg(0) is None and event.argstr == "profile-1ms"
    assert event._split_chain() == ([0xFFFFFFFF81000010], [0x401000])
    assert rs.counted_seen == 0  # timers are not countable


def test_wire_round_trip_of_opened_events():
    desc = EventDesc(3, "tracepoint", "sys_enter_getppid", "syscalls:sys_enter_getppid", GETPPID)
    opened = OpenedEvents([10, 11, 12], [(0, 0), (0, 0), (1, 2)], [desc, desc])
    back = OpenedEvents.from_wire(opened.to_wire(), [20, 21, 22])
    assert back.descs == [desc, desc] and back.slots == opened.slots and back.fds == [20, 21, 22]
    bad = opened.to_wire()
    bad["slots"][2] = [1, 1]  # points at a slot that does not own a ring
    try:
        OpenedEvents.from_wire(bad, [1, 2, 3])
    except ValueError:
        pass
    else:
        raise AssertionError("a bad ring owner was accepted")


def test_a_raising_handler_loses_only_its_own_event():
    ring = FakeRing(pages=1, start=0)
    desc = EventDesc(7, "tracepoint", "sys_enter_getppid", "syscalls:sys_enter_getppid", GETPPID)
    rs = _ringset(ring, [desc], [1001])
    raw = struct.pack("<HBBii", 305, 0, 0, 55, 110)
    for i in range(4):
        ring.write(_sample(1001, 55, 56, i, 0, raw))
    seen = []

    def handler(event):
        if event.time_ns == 1:
            raise RuntimeError("handler bug")
        seen.append(event.time_ns)
    try:
        rs.drain(handler)
    except RuntimeError:
        pass
    assert seen == [0]
    rs.drain(handler)
    assert seen == [0, 2, 3]
    assert rs.counted_seen == 4


def test_chunk_and_ring_boundaries_split_no_record():
    """Records of many sizes cross the drain's 64 KiB copy slices and the ring's
    end; each arrives once, whole, in order."""
    ring = FakeRing(pages=32, start=32 * PAGE - 3000)  # 128 KiB ring, start near its end
    desc = EventDesc(7, "tracepoint", "sys_enter_getppid", "syscalls:sys_enter_getppid", GETPPID)
    rs = _ringset(ring, [desc], [1001])
    sizes = [12, 60_000, 12, 300, 7_000, 12, 50_000, 4_000, 12] * 2
    expected = []
    total_seen = []
    for i, size in enumerate(sizes):
        raw = struct.pack("<HBBii", 305, 0, 0, 55, i) + bytes(size - 12)
        record = _sample(1001, 55, 56, i, 0, raw)
        if ring.head - ring.tail + len(record) > ring.size:  # full: drain first
            rs.drain(lambda e: total_seen.append((e.time_ns, e.arg(0))))
            ring.tail = struct.unpack_from("<Q", ring.mm, abi.MMAP_DATA_TAIL)[0]
        ring.write(record)
        expected.append((i, i))
    rs.drain(lambda e: total_seen.append((e.time_ns, e.arg(0))))
    assert total_seen == expected


OPENAT_LIKE = parse_format("""name: sys_enter_other
ID: 306
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
""", "syscalls")

# What a generated record is: ("a"|"b"|"c"|"unknown", raw padding) samples,
# ("lost", n) records.  a and b have records of the same size (one run may
# mix them), c's are longer; "unknown" has an identifier nobody opened.
_IDENTS = {"a": 11, "b": 12, "c": 13, "unknown": 99}
_record_strategy = st.one_of(
    st.tuples(st.sampled_from(["a", "b", "unknown"]), st.just(0), st.sampled_from([0, 1, 2])),
    st.tuples(st.just("c"), st.sampled_from([8, 100]), st.sampled_from([0, 1])),
    st.tuples(st.just("lost"), st.integers(1, 5), st.just(0)),
)


@settings(max_examples=150, deadline=None)
@given(records=st.lists(_record_strategy, max_size=120),
       start=st.integers(0, 8 * PAGE // 8 - 1).map(lambda x: x * 8),
       raising=st.sets(st.integers(0, 119), max_size=6))
def test_runs_deliver_every_sample_once_in_order(records, start, raising):
    """Runs of same-sized samples (mixed events, varying misc bits, unknown
    identifiers, LOST records between them, the ring's end anywhere): every
    known sample reaches its handler once, in order, with its own event's
    tag; a raising handler loses only its own event; loss and tail are exact."""
    ring = FakeRing(pages=8, start=start)  # larger than 120 of the longest records
    descs = [EventDesc(tag, "tracepoint", name, f"syscalls:{name}", layout)
             for tag, name, layout in ((1, "a", GETPPID), (2, "b", GETPPID), (3, "c", OPENAT_LIKE))]
    rs = _ringset(ring, descs, [11, 12, 13])
    expected, lost = [], 0
    for i, (kind, extra, misc) in enumerate(records):
        if kind == "lost":
            ring.write(_record(abi.PERF_RECORD_LOST, struct.pack("<QQ", 11, extra)))
            lost += extra
            continue
        raw = struct.pack("<HBBii", 305, 0, 0, 55, i) + bytes(extra)
        record = bytearray(_sample(_IDENTS[kind], 55, 56, i, 0, raw))
        struct.pack_into("<H", record, 4, misc)
        ring.write(bytes(record))
        if kind != "unknown":
            expected.append(({"a": 1, "b": 2, "c": 3}[kind], i))
    seen, calls = [], [0]

    def handler(event):
        calls[0] += 1
        if calls[0] - 1 in raising:
            raise RuntimeError("handler bug")
        seen.append((event.tag, event.arg(0)))
    for _ in range(len(raising) + 1):
        try:
            rs.drain(handler)
        except RuntimeError:
            continue
        break
    wanted = [e for n, e in enumerate(expected) if n not in raising]
    assert seen == wanted
    assert rs.counted_seen == len(expected) == calls[0]
    assert rs.lost == lost
    assert struct.unpack_from("<Q", ring.mm, abi.MMAP_DATA_TAIL)[0] == ring.head
    assert rs.drain(handler) == 0
