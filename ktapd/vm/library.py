"""Implementations of the builtins in protocol/bytecode/builtins.py (BUILTINS).

``IMPLEMENTATIONS`` maps every builtin name to a method of ``Library``; the
machine binds ``Library(machine).bound()`` into the generated code's
namespace as ``B<id>``, in table order.  The import-time check at the
bottom makes a new BUILTINS row without an implementation fail loudly.

Output goes through the machine: text into its per-invocation buffer
(``machine.write``), structured records (Histogram, Quantize) through
``machine.emit_record``, which flushes pending text first so the order is
kept.  Event builtins read ``machine.event()``; with no event they raise
"invalid event context".  Argument checks raise KtapError.

Must not import the probes, trio or ktapctl.
"""

from __future__ import annotations

import os
import time

from ktapd.vm import printf
from ktapd.vm.context import INVALID_EVENT_CONTEXT
from ktapd.vm.values import (
    Aggregate,
    EventString,
    KernelAddress,
    KtapError,
    Stack,
    Table,
    as_string,
    key_value,
    quantize_rows,
    to_text,
    type_name,
)
from protocol.bytecode.builtins import BUILTINS
from protocol.records import Histogram, Quantize

# stack(): ktap's defaults and cap (KP_MAX_STACK_DEPTH); the probe layer
# already drops the tracer's own frames, so the default skip is 0.
STACK_DEPTH_DEFAULT = 10
STACK_DEPTH_MAX = 50
PRINT_HIST_DEFAULT_ROWS = 20

# ANSI sequences exactly as ktap's lib_ansi.c wrote them.
ANSI_CLEAR_SCREEN = "\033[1;1H\033[J"
ANSI_RESET_COLOR = "\033[0;0m"

IMPLEMENTATIONS: dict[str, str] = {
    "print": "print_",
    "printf": "printf",
    "print_hist": "print_hist",
    "len": "len_",
    "delete": "delete",
    "exit": "exit_",
    "stack": "stack",
    "ustack": "ustack",
    "user_string": "user_string",
    "gettimeofday_s": "gettimeofday_s",
    "gettimeofday_ms": "gettimeofday_ms",
    "gettimeofday_us": "gettimeofday_us",
    "gettimeofday_ns": "gettimeofday_ns",
    "print_trace_clock": "print_trace_clock",
    "num_cpus": "num_cpus",
    "arch": "arch",
    "kernel_v": "kernel_v",
    "stringof": "stringof",
    "ipof": "ipof",
    "table.new": "table_new",
    "ansi.clear_screen": "ansi_clear_screen",
    "ansi.set_color": "ansi_set_color",
    "ansi.set_color2": "ansi_set_color2",
    "ansi.set_color3": "ansi_set_color3",
    "ansi.reset_color": "ansi_reset_color",
    "ansi.new_line": "ansi_new_line",
    "count": "agg_count",
    "sum": "agg_sum",
    "avg": "agg_avg",
    "min": "agg_min",
    "max": "agg_max",
    "ptable": "ptable",
    "hist": "hist",
}


class ExitSignal(Exception):
    """exit() was called: stop the current handler or main chunk, not an error."""


def _number(name: str, position: int, value: object) -> int:
    if value.__class__ is not int:
        raise KtapError(f"bad argument #{position} to '{name}' (number expected, "
                        f"got {type_name(value)})")
    return value


def _table(name: str, value: object) -> Table:
    if value.__class__ is not Table:
        raise KtapError(f"bad argument #1 to '{name}' (table expected, got {type_name(value)})")
    return value


def _aggregate(name: str, value: object) -> Aggregate | None:
    if value is None or value.__class__ is Aggregate:
        return value
    raise KtapError(f"bad argument #1 to '{name}' (aggregate expected, got {type_name(value)})")


def _sort_key(item: tuple) -> tuple:
    """print_hist order: value descending, then key ascending (numbers
    before strings before anything else, which sorts by its text)."""
    key, value = item
    if key.__class__ is int:
        return (-value, 0, key, "")
    if key.__class__ is str:
        return (-value, 1, 0, key)
    return (-value, 2, 0, _key_text(key))


def _key_text(key: object) -> str:
    if key.__class__ is Stack or key.__class__ is KernelAddress:
        return key.text()
    return to_text(key)


class Library:
    """The builtins of one machine."""

    def __init__(self, machine) -> None:
        self.m = machine
        self.limits = machine.limits
        self._printf = printf.Formatter(machine.limits.output_line_bytes)

    def bound(self) -> list:
        return [getattr(self, IMPLEMENTATIONS[b.name]) for b in BUILTINS]

    def _event(self):
        event = self.m.event()
        if event is None:
            raise KtapError(INVALID_EVENT_CONTEXT)
        return event

    # --- output ---------------------------------------------------------

    def print_(self, *values) -> None:
        self.m.write("\t".join([to_text(v) for v in values]) + "\n")

    def printf(self, fmt, *values) -> None:
        self.m.write(self._printf.format(fmt, values))

    def print_hist(self, table, rows=PRINT_HIST_DEFAULT_ROWS) -> None:
        t = _table("print_hist", table)
        limit = _number("print_hist", 2, rows)
        items = []
        total = 0
        stack_keys = False
        for key, value in t.d.items():
            if value.__class__ is Aggregate:
                value = value.count
            elif value.__class__ is not int:
                raise KtapError(f"print_hist only can print number values, got {type_name(value)}")
            key = key_value(key)
            stack_keys = stack_keys or key.__class__ is Stack
            items.append((key, value))
            total += value
        items.sort(key=_sort_key)
        shown = items[:max(limit, 0)]
        self.m.emit_record(Histogram(
            rows=tuple((_key_text(k), v) for k, v in shown),
            total=total,
            truncated=len(shown) < len(items),
            stack_keys=stack_keys,
        ))

    def hist(self, agg) -> None:
        if agg.__class__ is not Aggregate:
            raise KtapError(f"bad argument #1 to 'hist' (aggregate expected, got {type_name(agg)})")
        self.m.emit_record(Quantize(buckets=quantize_rows(agg.buckets)))

    def print_trace_clock(self) -> None:
        seconds, rest = divmod(self._event().time_ns, 1_000_000_000)
        self.m.write(f"{seconds:5d}.{rest // 1000:06d}\n")

    def ansi_clear_screen(self) -> None:
        self.m.write(ANSI_CLEAR_SCREEN)

    def ansi_set_color(self, fg) -> None:
        self.m.write(f"\033[{_number('ansi.set_color', 1, fg)}m")

    def ansi_set_color2(self, fg, bg) -> None:
        fg = _number("ansi.set_color2", 1, fg)
        bg = _number("ansi.set_color2", 2, bg)
        self.m.write(f"\033[{fg};{bg}m")

    def ansi_set_color3(self, fg, bg, attr) -> None:
        fg = _number("ansi.set_color3", 1, fg)
        bg = _number("ansi.set_color3", 2, bg)
        attr = _number("ansi.set_color3", 3, attr)
        # ktap left the attribute out when it was 0.
        self.m.write(f"\033[{fg};{bg};{attr}m" if attr else f"\033[{fg};{bg}m")

    def ansi_reset_color(self) -> None:
        self.m.write(ANSI_RESET_COLOR)

    def ansi_new_line(self) -> None:
        self.m.write("\n")

    # --- tables and strings -------------------------------------------

    def len_(self, value) -> int:
        text = as_string(value)
        if text is not None:
            return len(text)
        if value.__class__ is Table:
            return len(value.d)
        raise KtapError(f"bad argument #1 to 'len' (string or table expected, "
                        f"got {type_name(value)})")

    def delete(self, table) -> None:
        _table("delete", table).d.clear()

    def table_new(self, narr=0, nrec=0) -> Table:
        narr = _number("table.new", 1, narr)
        nrec = _number("table.new", 2, nrec)
        if narr < 0 or nrec < 0:
            raise KtapError("bad argument to 'table.new' (sizes must not be negative)")
        wanted = max(self.limits.table_entries, narr + nrec)
        return Table(min(wanted, self.limits.table_entries_max))

    def ptable(self) -> Table:
        return Table(self.limits.table_entries)

    def stringof(self, value) -> str:
        if value.__class__ is Stack or value.__class__ is KernelAddress:
            return value.text()
        if value.__class__ is EventString:
            return value.text
        return to_text(value)

    def ipof(self, addr) -> KernelAddress:
        addr = _number("ipof", 1, addr)
        symbolize = self.m.symbolize
        return KernelAddress(addr, symbolize(addr) if symbolize is not None else None)

    # --- aggregates -----------------------------------------------------

    def agg_count(self, agg) -> int:
        agg = _aggregate("count", agg)
        return agg.count if agg else 0

    def agg_sum(self, agg) -> int:
        agg = _aggregate("sum", agg)
        return agg.sum if agg else 0

    def agg_avg(self, agg) -> int:
        agg = _aggregate("avg", agg)
        return agg.avg if agg else 0

    def agg_min(self, agg) -> int:
        agg = _aggregate("min", agg)
        return agg.min if agg else 0

    def agg_max(self, agg) -> int:
        agg = _aggregate("max", agg)
        return agg.max if agg else 0

    # --- control --------------------------------------------------------

    def exit_(self) -> None:
        self.m.request_exit()
        raise ExitSignal()

    # --- event ----------------------------------------------------------

    def stack(self, depth=STACK_DEPTH_DEFAULT, skip=0) -> Stack:
        depth = _number("stack", 1, depth)
        skip = _number("stack", 2, skip)
        if depth < 0 or depth > STACK_DEPTH_MAX:
            depth = STACK_DEPTH_MAX  # ktap: -1 (and anything larger) means the maximum
        frames = self._event().kernel_stack()
        skip = max(skip, 0)
        return Stack(tuple(str(f) for f in frames[skip:skip + depth]))

    def ustack(self, depth=STACK_DEPTH_DEFAULT) -> Stack:
        depth = _number("ustack", 1, depth)
        if depth < 0 or depth > STACK_DEPTH_MAX:
            depth = STACK_DEPTH_MAX
        return Stack(tuple(str(f) for f in self._event().user_stack()[:depth]))

    def user_string(self, addr) -> str | None:
        addr = _number("user_string", 1, addr)
        limit = self.limits.string_bytes
        text = self._event().read_user_string(addr, limit)
        if text is None:
            return None
        return str(text)[:limit]

    # --- host -----------------------------------------------------------

    def gettimeofday_s(self) -> int:
        return time.time_ns() // 1_000_000_000

    def gettimeofday_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def gettimeofday_us(self) -> int:
        return time.time_ns() // 1_000

    def gettimeofday_ns(self) -> int:
        return time.time_ns()

    def num_cpus(self) -> int:
        try:
            return int(os.sysconf("SC_NPROCESSORS_ONLN"))
        except (ValueError, OSError):
            return os.cpu_count() or 1

    def arch(self) -> str:
        return os.uname().machine

    def kernel_v(self) -> str:
        return os.uname().release


_missing = [b.name for b in BUILTINS
            if b.name not in IMPLEMENTATIONS or not hasattr(Library, IMPLEMENTATIONS[b.name])]
if _missing:  # pragma: no cover - caught by any import in the test suite
    raise ImportError(f"builtins without an implementation: {_missing}")
