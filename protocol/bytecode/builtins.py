"""Built-in functions and event variables: one table each, shared by all sides.

The compiler resolves names through these tables, the verifier checks ids
and argument counts against them, and the VM binds each id to an
implementation.  A builtin's id is its position in ``BUILTINS``; appending
is compatible, reordering is a bytecode format change.

Also here: ``KERNEL_ONLY``, the builtins of the original ktap that read
kernel memory and cannot exist in a userspace VM, with the reason the
compiler prints.

This module must not import anything outside the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

VARIADIC = -1

# Where a builtin may run.  ANY: main chunk, handlers, timers, trace_end.
# EVENT: only while an event is being handled (trace/profile handlers):
# elsewhere it is a run-time error "invalid event context".
ANY = "any"
EVENT = "event"


@dataclass(frozen=True)
class Builtin:
    id: int
    name: str  # as written in scripts: "print", "table.new", "ansi.set_color"
    min_args: int
    max_args: int  # VARIADIC for no upper bound
    context: str  # ANY or EVENT
    admin_only: bool  # exposes kernel addresses: only administrators may load it
    doc: str


_ROWS: list[tuple[str, int, int, str, bool, str]] = [
    # name, min, max, context, admin_only, doc
    ("print", 0, VARIADIC, ANY, False, "values joined by TAB, then a newline"),
    ("printf", 1, VARIADIC, ANY, False, "C-like formatted output (%c %d %i %o %u %x %X %s %p %%)"),
    ("print_hist", 1, 2, ANY, False, "bar chart of a table by value, top n rows (default 20)"),
    ("len", 1, 1, ANY, False, "string length or table entry count"),
    ("delete", 1, 1, ANY, False, "remove every entry of a table"),
    ("exit", 0, 0, ANY, False, "end tracing (trace_end still runs); in the main chunk, stop it"),
    ("stack", 0, 2, EVENT, True, "kernel call stack of the event: stack([depth [, skip]])"),
    ("ustack", 0, 1, EVENT, False, "user call stack of the event: ustack([depth])"),
    ("user_string", 1, 1, EVENT, False, "NUL-terminated string at a user address of the traced task, or nil"),
    ("gettimeofday_s", 0, 0, ANY, False, "wall-clock seconds"),
    ("gettimeofday_ms", 0, 0, ANY, False, "wall-clock milliseconds"),
    ("gettimeofday_us", 0, 0, ANY, False, "wall-clock microseconds"),
    ("gettimeofday_ns", 0, 0, ANY, False, "wall-clock nanoseconds"),
    ("print_trace_clock", 0, 0, EVENT, False, "print the event clock as secs.usecs"),
    ("num_cpus", 0, 0, ANY, False, "number of online CPUs"),
    ("arch", 0, 0, ANY, False, "machine name (uname -m)"),
    ("kernel_v", 0, 0, ANY, False, "kernel release (uname -r)"),
    ("stringof", 1, 1, ANY, False, "argstr or a stack as a plain string"),
    ("ipof", 1, 1, ANY, True, "tag a number as a kernel address so print_hist symbolises it"),
    ("table.new", 0, 2, ANY, False, "a table sized for narr + nrec entries: table.new(narr, nrec)"),
    ("ansi.clear_screen", 0, 0, ANY, False, "ANSI: clear the screen"),
    ("ansi.set_color", 1, 1, ANY, False, "ANSI: set foreground colour"),
    ("ansi.set_color2", 2, 2, ANY, False, "ANSI: set foreground and background colour"),
    ("ansi.set_color3", 3, 3, ANY, False, "ANSI: set colours and attribute"),
    ("ansi.reset_color", 0, 0, ANY, False, "ANSI: reset colours"),
    ("ansi.new_line", 0, 0, ANY, False, "ANSI: a newline"),
    ("count", 1, 1, ANY, False, "number of samples in an aggregate (0 for nil)"),
    ("sum", 1, 1, ANY, False, "sum of an aggregate's samples (0 for nil)"),
    ("avg", 1, 1, ANY, False, "integer average of an aggregate's samples (0 for nil)"),
    ("min", 1, 1, ANY, False, "smallest sample of an aggregate (0 for nil)"),
    ("max", 1, 1, ANY, False, "largest sample of an aggregate (0 for nil)"),
    ("ptable", 0, 0, ANY, False, "a new table (kept for ktap 0.3/0.4 scripts)"),
    ("hist", 1, 1, ANY, False, "power-of-two distribution of an aggregate (DTrace quantize layout)"),
]

BUILTINS: tuple[Builtin, ...] = tuple(
    Builtin(i, name, lo, hi, ctx, admin, doc)
    for i, (name, lo, hi, ctx, admin, doc) in enumerate(_ROWS)
)
BUILTIN_BY_NAME: dict[str, Builtin] = {b.name: b for b in BUILTINS}

# Namespaces that exist only as prefixes of builtin names ("ansi.set_color").
NAMESPACES: frozenset[str] = frozenset(
    b.name.split(".", 1)[0] for b in BUILTINS if "." in b.name
)

# The original's builtins that need kernel memory or kernel context; the
# compiler rejects them with this reason instead of "unknown name".
_KERNEL_REASON = "reads kernel memory, which a userspace tracer cannot do"
KERNEL_ONLY: dict[str, str] = {
    "kernel_string": _KERNEL_REASON,
    "curr_taskinfo": "reads the kernel's task_struct, which a userspace tracer cannot do",
    "in_iowait": "reads the kernel's task_struct, which a userspace tracer cannot do",
    "in_interrupt": "needs the kernel's interrupt context, which a userspace tracer does not run in",
    "net": "the net.* functions dereference kernel socket pointers, which a userspace tracer cannot do",
    "ffi": "FFI calls kernel functions, which a userspace tracer cannot do",
    "cdef": "FFI declarations call kernel functions, which a userspace tracer cannot do",
}


@dataclass(frozen=True)
class EventVar:
    id: int
    name: str
    context: str  # ANY: also outside handlers (describes the daemon side); EVENT: handlers only
    doc: str


_EVENT_ROWS: list[tuple[str, str, str]] = [
    ("argstr", EVENT, "the event rendered as ftrace prints it"),
    ("probename", EVENT, "the event's name"),
    ("pid", ANY, "kernel pid of the thread"),
    ("tid", ANY, "thread id"),
    ("uid", ANY, "real uid of the task"),
    ("cpu", ANY, "CPU the event fired on"),
    ("execname", ANY, "the task's comm"),
] + [(f"arg{i}", EVENT, f"event field {i} in format-file order (common fields excluded)")
     for i in range(10)]

EVENT_VARS: tuple[EventVar, ...] = tuple(
    EventVar(i, name, ctx, doc) for i, (name, ctx, doc) in enumerate(_EVENT_ROWS)
)
EVENT_VAR_BY_NAME: dict[str, EventVar] = {v.name: v for v in EVENT_VARS}
