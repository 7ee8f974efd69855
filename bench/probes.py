"""Probe-layer throughput: lossless event rate and consumer CPU per event.

For the same paced getppid workload (a small C program compiled here:
``workload getppid N RATE``, spin-paced on the vDSO clock, as in
reference/perf-anchors.md), two consumers read the same kind of rings
(system-wide ``syscalls:sys_enter_getppid``, one ring per CPU, wake-ups as
RingSet.poll does them, 4 MiB rings: see PAGES), the consumer pinned to
CPU 0 and the workload to CPU 1:

  (a) baseline: the anchor's minimal drain loop over the mmapped rings,
      one header unpack and one dict increment per record, no decoding;
  (b) probes: ``RingSet.drain`` delivering decoded ``Event`` objects to a
      no-op handler.

Loss is exact for both: the kernel's hit count (read(2) on every event fd)
minus the samples seen.  A run is lossless only when that is 0.

Method, because this VM is shared and noisy (vCPU stalls; other jobs slow
the workload down).  The run is made of sweeps; a sweep goes up the rates
and at each rate runs (a) and (b) back to back, alternating which goes
first.  The workload may fall behind the asked
rate when it shares its CPU, so the table shows the rate it achieved (N
over its own elapsed time), and an asked rate counts as tested in a sweep
only if the workload achieved at least PACED of it in both consumers'
runs.  Per sweep and consumer, the lossless rate is the highest tested
rate with no loss in any run of that sweep at that rate or below (the
strict rule, within one sweep).  The verdict is the median over sweeps of
the paired ratio (b)/(a), printed with its range (target >= 0.8): one noisy
sample spoils one sweep, not the verdict.  A sweep in which
neither consumer lost anything is capped: the workload ran out before
either consumer did (the ratio there is 1.00 by construction), and the
summary says how many were.  CPU per event is each sweep's
total consumer CPU (user + system, from the first drain to the last) over
its events; its ratio (a)/(b) is the steadier reading.  Last, both loops
drain one in-memory ring (no kernel, no scheduler): the hot path alone.

Needs root and gcc.  About 80 s: ``python bench/probes.py`` (``--quick``,
``--sweeps``, ``--seconds`` per run).
"""

from __future__ import annotations

import argparse
import mmap
import os
import pathlib
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from ktapd.probes import _perf_abi as abi  # noqa: E402
from ktapd.probes.perf_event import RingSet  # noqa: E402
from ktapd.probes.registry import ProbeSet  # noqa: E402

WORKLOAD_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static double now(void) {
  struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
  long n = atol(argv[2]); double rate = atof(argv[3]), start = now();
  for (long i = 0; i < n; i++) {
    syscall(SYS_getppid);
    if (rate > 0) while (now() - start < i / rate) ;
  }
  printf("%.6f\n", now() - start);
  return 0;
}
"""

# 4 MiB per CPU.  This VM's vCPUs stall for 10-30 ms at times (measured:
# no drain for 12-28 ms while the consumer was runnable), which overflows a
# session's default 512 KiB ring at 500k events/s whatever the consumer
# does; a ring that rides out the stalls makes the drain loop's speed, not
# the host's scheduling, decide the result.
PAGES = 1024
_HDR = struct.Struct("<IHHQII")  # header, sample identifier, pid, tid: one unpack a record
_U64 = struct.Struct("<Q")


def build_workload(tmp: pathlib.Path) -> str:
    src = tmp / "workload.c"
    src.write_text(WORKLOAD_C)
    out = tmp / "workload"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(src)], check=True)
    return str(out)


def baseline_drain(rs: RingSet, counts: dict) -> int:
    """perf-anchors.md's minimal consumer over RingSet's rings: no decoding."""
    n = 0
    unpack = _HDR.unpack_from
    for ring in rs.rings:
        mm, mask, base = ring.mm, ring.size - 1, 4096
        tail = ring.tail
        head = _U64.unpack_from(mm, abi.MMAP_DATA_HEAD)[0]
        while tail < head:
            off = tail & mask
            if off + 24 <= ring.size:
                rtype, _misc, size, _ident, _pid, tid = unpack(mm, base + off)
            else:
                rtype, _misc, size = struct.unpack_from("<IHH", mm, base + off)
                tid = -1
            if rtype == abi.PERF_RECORD_SAMPLE:
                counts[tid] = counts.get(tid, 0) + 1
                n += 1
            tail += size
        _U64.pack_into(mm, abi.MMAP_DATA_TAIL, tail)
        ring.tail = tail
    rs._last_batch = n  # the same wake-up policy as RingSet.drain (see RingSet.wait_limit)
    return n


CONSUMER_CPU, WORKLOAD_CPU = 0, 1
MODES = ("baseline", "probes")
# The workload peaks near 1.1M calls/s on this VM (traced getppid plus the
# pacing clock); the 2M step is the workload flat out.
RATES = [250_000, 500_000, 750_000, 1_000_000, 1_250_000, 2_000_000]


def _pin_workload() -> None:
    os.sched_setaffinity(0, {WORKLOAD_CPU})


def run_once(mode: str, workload: str, rate: int, seconds: float) -> dict:
    n = int(rate * seconds)
    with ProbeSet(f"ktapd_bench{os.getpid()}") as ps:
        ps.add_trace(0, ["syscalls:sys_enter_getppid"])
        rs = RingSet(ps.opened, pages=PAGES)
        counts: dict = {}
        seen = 0

        def noop(event):
            pass
        if mode == "baseline":
            def drain():
                return baseline_drain(rs, counts)
        else:
            def drain():
                return rs.drain(noop)
        rs.enable()
        proc = subprocess.Popen([workload, "getppid", str(n), str(rate)], stdout=subprocess.PIPE,
                                preexec_fn=_pin_workload)
        t0 = time.process_time()  # after the fork: the draining, not the spawning
        while proc.poll() is None:
            rs.poll(0.05)
            seen += drain()
        seen += drain()
        rs.disable()
        seen += drain()
        cpu = time.process_time() - t0
        kernel = rs.kernel_counts()
        elapsed = float(proc.stdout.read() or 0)
        rs.close()
    return {"mode": mode, "rate": rate, "n": n, "seen": seen, "lost": kernel - seen,
            "achieved": n / elapsed if elapsed > 0 else 0.0, "cpu_s": cpu}


# A run tests its asked rate only if the workload came this close to it
# (a workload sharing its CPU falls behind and offers less).
PACED = 0.9


def tested_rates(runs: dict[str, list[dict]]) -> set[int]:
    """The asked rates of one sweep that the workload reached in both
    consumers' runs: the two are compared on the same rates only."""
    return {rate for rate in {r["rate"] for r in runs[MODES[0]]}
            if all(r["achieved"] >= PACED * rate for m in MODES for r in runs[m]
                   if r["rate"] == rate)}


def lossless_rate(runs: list[dict], tested: set[int]) -> int:
    """The highest tested rate with no loss in any run at that rate or below."""
    best = 0
    for run in sorted(runs, key=lambda r: (r["rate"], r["lost"] == 0)):
        if run["lost"]:
            break
        if run["rate"] in tested:
            best = run["rate"]
    return best


def in_memory_ns_per_event(rounds: int = 30, batch: int = 16_384) -> dict[str, float]:
    """Median ns per event of both drain loops over one in-memory ring, laid
    out as the kernel lays out a perf mmap, refilled before every drain."""
    from ktapd.probes.events import EventDesc, Target, TaskCache
    from ktapd.probes.formats import parse_format
    from ktapd.probes.perf_event import OpenedEvents, Ring
    layout = parse_format("name: sys_enter_getppid\nID: 1\nformat:\n"
                          "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
                          "\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n", "syscalls")
    desc = EventDesc(0, "tracepoint", "sys_enter_getppid", "syscalls:sys_enter_getppid", layout)
    ident = 7
    # A getppid sample as the kernel writes it: header, identifier, pid/tid,
    # time, cpu/reserved, raw size, 12 raw bytes: 56 bytes.
    record = struct.pack("<IHHQIIQIII12s", abi.PERF_RECORD_SAMPLE, 1, 56, ident, 1, 1, 0, 0,
                         0, 12, b"\1" * 12)
    assert len(record) == 56
    size = 1 << (batch * len(record)).bit_length()  # a power of two that holds a batch
    stream = record * (batch + 1)
    ring = Ring.__new__(Ring)
    ring.fd, ring.size, ring.tail = -1, size, 0
    ring.mm = mmap.mmap(-1, mmap.PAGESIZE + size)
    rs = RingSet.__new__(RingSet)
    rs.opened, rs.tasks = OpenedEvents([], [], [desc]), TaskCache()
    rs.targets_by_desc = [Target(desc, rs.tasks)]
    rs.targets = {ident: rs.targets_by_desc[0]}
    rs.fast_targets = dict(rs.targets)
    rs.rings, rs.timers, rs._fast_keys, rs.exited = [ring], [], {}, set()
    rs.lost = rs.delivered = rs.counted_seen = 0

    def fill() -> None:  # the next batch of records after the tail, wrapping
        start, length = ring.tail, batch * len(record)
        data = stream[start % len(record):start % len(record) + length]
        off = start & (size - 1)
        first = min(length, size - off)
        ring.mm[mmap.PAGESIZE + off:mmap.PAGESIZE + off + first] = data[:first]
        ring.mm[mmap.PAGESIZE:mmap.PAGESIZE + length - first] = data[first:]
        _U64.pack_into(ring.mm, abi.MMAP_DATA_HEAD, start + length)
    drains = {"baseline": lambda: baseline_drain(rs, {}), "probes": lambda: rs.drain(lambda e: None)}
    samples: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(rounds):
        for mode in MODES:
            fill()
            t0 = time.process_time_ns()
            got = drains[mode]()
            samples[mode].append((time.process_time_ns() - t0) / batch)
            if got != batch:
                raise RuntimeError(f"in-memory ring: {mode} drained {got} of {batch}")
    return {m: statistics.median(v) for m, v in samples.items()}


def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    return (fmt.format(statistics.median(values)) + " (" + fmt.format(min(values)) + "-"
            + fmt.format(max(values)) + ")")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.6, help="workload length per run")
    parser.add_argument("--sweeps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 sweeps of 3 rates")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("gcc") is None:
        sys.exit("bench/probes.py needs root and gcc")
    if len(os.sched_getaffinity(0)) > 1:
        # The consumer on one CPU, the spinning workload on another: otherwise
        # the scheduler sometimes stacks them and the run measures CFS
        # latency, not the drain loop (both modes get the same placement).
        os.sched_setaffinity(0, {CONSUMER_CPU})
    rates, sweeps = RATES, args.sweeps
    if args.quick:
        rates, sweeps = [500_000, 1_000_000, 2_000_000], 3
    results: list[dict[str, list[dict]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workload = build_workload(pathlib.Path(tmp))
        print(f"{'sweep':>5} {'asked/s':>9} | {'mode':>8} {'achieved/s':>10} {'lost':>7} "
              f"{'CPU ns/ev':>9} | {'mode':>8} {'achieved/s':>10} {'lost':>7} {'CPU ns/ev':>9}")
        for sweep in range(sweeps):
            runs: dict[str, list[dict]] = {m: [] for m in MODES}
            for rate in rates:
                order = MODES if sweep % 2 == 0 else MODES[::-1]
                for mode in order:
                    runs[mode].append(run_once(mode, workload, rate, args.seconds))
                cells = [f"{m:>8} {runs[m][-1]['achieved']:>10.0f} {runs[m][-1]['lost']:>7} "
                         f"{runs[m][-1]['cpu_s'] / max(runs[m][-1]['seen'], 1) * 1e9:>9.0f}"
                         for m in MODES]
                print(f"{sweep:>5} {rate:>9} | " + " | ".join(cells), flush=True)
            results.append(runs)
    memory = in_memory_ns_per_event()

    best = {m: [lossless_rate(runs[m], tested_rates(runs)) for runs in results] for m in MODES}
    # A sweep where neither reached even the lowest rate says nothing (left out).
    ratios = [b / a if a else float("inf")
              for a, b in zip(best["baseline"], best["probes"], strict=True) if a or b]
    # Capped: neither consumer lost anything in the sweep, so the workload
    # (the highest rate it could be paced at), not a consumer, set both.
    capped = sum(all(r["lost"] == 0 for m in MODES for r in runs[m]) for runs in results)
    top = max(r["achieved"] for runs in results for m in MODES for r in runs[m])
    cost = {m: [sum(r["cpu_s"] for r in runs[m]) / max(sum(r["seen"] for r in runs[m]), 1) * 1e9
                for runs in results] for m in MODES}
    cpu_ratios = [a / b for a, b in zip(cost["baseline"], cost["probes"], strict=True)]
    print(f"\nlossless rate per sweep (asked/s, >= {PACED:.0%} of it achieved in both runs, "
          "no loss at or below it):")
    for m in MODES:
        print(f"  {m:>8}: " + ", ".join(f"{r:.0f}" for r in best[m]))
    verdict = statistics.median(ratios) if ratios else 0.0
    print(f"lossless-rate ratio probes/baseline, median (range) over {len(ratios)} sweeps: "
          f"{_spread(ratios)}  target >= 0.8: {'met' if verdict >= 0.8 else 'NOT met'}"
          + (f"\n  [{capped} of {len(results)} sweeps capped: neither consumer lost an event at "
             f"any rate; the workload peaked at {top:.0f}/s, so there the ratio is 1.00 by "
             "construction and the CPU per event below is the reading that tells them apart]"
             if capped else ""))
    print(f"consumer CPU ns/event, median (range) over sweeps: baseline "
          f"{_spread(cost['baseline'], '{:.0f}')}, probe layer {_spread(cost['probes'], '{:.0f}')}; "
          f"ratio baseline/probes {_spread(cpu_ratios)}")
    print(f"in-memory ring (hot path alone), median ns/event: baseline {memory['baseline']:.0f}, "
          f"probe layer {memory['probes']:.0f}; ratio {memory['baseline'] / memory['probes']:.2f}")


if __name__ == "__main__":
    main()
