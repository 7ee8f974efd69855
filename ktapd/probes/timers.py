"""Timers as perf events: ``tick-N`` and ``profile-N`` are cpu-clock samplers.

Both are the software event PERF_COUNT_SW_CPU_CLOCK with ``sample_period``
= N nanoseconds: an hrtimer that fires whether or not the CPU is idle, so
it delivers through the same rings, records and drain loop as every
other probe, with no second timing mechanism in the worker.

- ``tick-N``: one event on one CPU (the ``-C`` one, else the first online
  CPU), system-wide: fires every N, like ktap's tick.  Its samples carry the
  interrupted task, which scripts should not rely on.
- ``profile-N``: one event per CPU (or per traced task with ``-p``):
  samples describe the interrupted task.

The kernel refuses cpu-clock periods below 10 µs (it raises them); we
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
