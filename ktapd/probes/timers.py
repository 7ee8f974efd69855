"""Timers: ``tick-N`` is a timerfd in the reader, ``profile-N`` a cpu-clock sampler.

- ``tick-N`` fires every N of wall time on one CPU.  It needs no privilege
  and no kernel event, so it is not a perf event at all: its EventDesc
  travels with the others and the reader (RingSet) arms a CLOCK_MONOTONIC
  timerfd for it, polled with the rings and drained into the same
  handler.  (A cpu-clock event pinned to one CPU was tried first: on these
  VMs an idle vCPU delivers no cpu-clock samples, so a tick on it would
  stall.)  Tick events carry the reader's pid and CPU and the
  CLOCK_MONOTONIC time; scripts must not use event variables in ticks.
- ``profile-N``: the software event PERF_COUNT_SW_CPU_CLOCK with
  ``sample_period`` = N ns, one per CPU (or per traced task with ``-p``):
  samples describe the interrupted task, and only running CPUs sample.

The kernel refuses cpu-clock periods below 10 us (it raises them); we
refuse them up front so a script does not get a silently slower timer.

This module must not open anything itself; it describes the events.
"""

from __future__ import annotations

from ktapd.probes import _perf_abi as abi

MIN_PERIOD_NS = 10_000
TYPE = abi.PERF_TYPE_SOFTWARE
CONFIG = abi.PERF_COUNT_SW_CPU_CLOCK

_UNITS = ((1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us"))


def period_name(kind: str, period_ns: int) -> str:
    """``tick-100ms`` style name for probename."""
    for scale, unit in _UNITS:
        if period_ns % scale == 0:
            return f"{kind}-{period_ns // scale}{unit}"
    return f"{kind}-{period_ns}ns"


def check_period(period_ns: int) -> None:
    if period_ns < MIN_PERIOD_NS:
        raise ValueError(f"timer period {period_ns} ns is below the kernel's minimum of "
                         f"{MIN_PERIOD_NS // 1000} us")
