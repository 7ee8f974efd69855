"""The machine: runs one verified program's main chunk, handlers and trace_end.

Theory of operation
-------------------
At construction the whole program is translated to Python source
(translate.py) and compiled once; its namespace holds the fixed helpers
below, the builtins bound to this machine (``B<id>``), the string
constants, and two globals the generated code shares:

``E``  the current EventContext (a ProcessContext when there is no event)
``S``  steps left in the current run's budget (loop passes and calls)

The depth of non-tail calls travels as each function's keyword-only
``_depth`` argument (0 for the main chunk and handlers).

Each entry point (run_main, run_handler, run_end) resets these, calls the
compiled function, runs the tail-call trampoline if the function returned
a ``_Tail``, and turns any KtapError into one Error record carrying the
script line (found by walking the traceback to the innermost generated
frame: no line bookkeeping on the hot path).  After the first run-time
error the machine is *failed*: further handlers and trace_end do not run
(LANGUAGE.md: trace_end does not run after an error).  After ``exit()``
handlers no longer run, trace_end still does.

run_handler, the per-event path, is generated with the program
(translate.py): it runs the usual handlers' bodies inline, in its own
frame, with the upvalue cells REGISTER found in the handler closure
(``_register``), and calls any other handler.

Output of print/printf/ansi.* is buffered and sent as one Text record per
invocation (fewer records, and the renderer sees whole lines); histograms
flush the buffer first so order is kept.  A very chatty invocation is
flushed every ``_FLUSH_EVERY`` writes to bound memory.  With
``timestamps`` (ktap -T) a Text record carries the event's time.

Budgets: one step per loop pass and per call (tail calls included), as
LANGUAGE.md says; work that grows with a table (the pairs() snapshot,
print_hist's sort) also costs one step per 16 entries, so that no loop can
repeat unbounded work without running out of steps.

Nothing escapes run_main/run_handler/run_end as a Python exception: an
unexpected one (a VM bug) becomes an Error record starting with
"internal error" and fails the machine.

This module must not import the probes, trio, ctypes or ktapctl.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FunctionType

from ktapd.verifier import VerifiedProgram
from ktapd.vm import compact, translate, values
from ktapd.vm.context import ProcessContext
from ktapd.vm.library import ExitSignal, Library
from ktapd.vm.values import KtapError, Table
from protocol.bytecode.program import PROBE_END, Probe
from protocol.limits import INT64_MAX, INT64_MIN, RuntimeLimits
from protocol.records import Error, Record, Text

BUDGET_EXCEEDED = "loop execute count exceed max limit"
STACK_OVERFLOW = "stack overflow"
_FLUSH_EVERY = 512
DEFAULT_LIMITS = RuntimeLimits()
_DECIMAL = re.compile(r"-?[0-9]+\Z")


@dataclass(frozen=True, slots=True)
class Registration:
    """A probe or timer handler registered by the main chunk (REGISTER).

    ``index`` is the probe table entry, ``handler`` the closure to pass to
    Machine.run_handler.  ``inline`` is the slot of run_handler's inline
    copy of the handler's body (0: none, call ``handler``) and ``cells``
    the upvalue cells that copy uses (translate.py).  trace_end handlers
    are not listed here."""

    index: int
    probe: Probe
    handler: Callable
    inline: int = 0
    cells: tuple = ()


class _Tail:
    """What ``return f(x)`` returns: the callee and its arguments, for the trampoline."""

    __slots__ = ("f", "a")

    def __init__(self, f, a) -> None:
        self.f = f
        self.a = a


def _budget() -> None:
    raise KtapError(BUDGET_EXCEEDED)


def _overflow() -> None:
    raise KtapError(STACK_OVERFLOW)


def _notfn(value: object) -> None:
    raise KtapError(f"attempt to call a {values.type_name(value)} value")


def _nottable(value: object) -> None:
    raise KtapError(f"attempt to index a {values.type_name(value)} value")


def _fornum(start: object, stop: object, step: object) -> range:
    if start.__class__ is not int or stop.__class__ is not int or step.__class__ is not int:
        for what, v in (("initial value", start), ("limit", stop), ("step", step)):
            if v.__class__ is not int:
                raise KtapError(f"'for' {what} must be a number, got {values.type_name(v)}")
    if step > 0:
        numbers = range(start, stop + 1, step)
        if stop - start < _NO_BUDGET_REACHES:
            return numbers
    elif step < 0:
        numbers = range(start, stop - 1, step)
        if start - stop < _NO_BUDGET_REACHES:
            return numbers
    else:
        raise KtapError("'for' step is zero")
    return numbers[:_NO_BUDGET_REACHES]


# A loop longer than this cannot finish within any step budget, so cutting
# it here is invisible, and keeps len() within a C ssize_t.
_NO_BUDGET_REACHES = 1 << 62


def _size(table: object) -> int:
    return len(table.d) if table.__class__ is Table else 0


def _clip(numbers: range, budget: int):
    """The first ``budget`` values, then the budget error (leaf FORNUM loops)."""
    yield from numbers[:budget]
    _budget()


def _field(event, name: str):
    try:
        value = event.field(name)
    except KeyError:
        raise KtapError(f"the event has no field '{name}'") from None
    if value.__class__ is int and not INT64_MIN <= value <= INT64_MAX:
        value = values.wrap(value)
    return value


def _aggadd(table: object, key: object, value: object, name: str | None) -> None:
    if table.__class__ is not Table:
        _nottable(table)
    k = values.table_key(key)
    d = table.d
    agg = d.get(k)
    if agg is None:
        if len(d) >= table.limit:
            values.table_full(table, name)
        agg = d[k] = values.Aggregate()
    elif agg.__class__ is not values.Aggregate:
        raise KtapError(f"<<< on a {values.type_name(agg)} value (an aggregate was expected)")
    agg.add(value)


_HELPERS = {
    "_T": Table,
    "_F": FunctionType,
    "_Tail": _Tail,
    "_EvStr": values.EventString,
    "_key": values.table_key,
    "_tfull": values.table_full,
    "_arith": values.arith_error,
    "_cmperr": values.compare_error,
    "_div": values.divide,
    "_mod": values.modulo,
    "_wrap": values.wrap,
    "_concat": values.concat,
    "_strlong": values.string_too_long,
    "_pairs": values.pairs_snapshot,
    "_fornum": _fornum,
    "_clip": _clip,
    "_size": _size,
    "_budget": _budget,
    "_overflow": _overflow,
    "_notfn": _notfn,
    "_nottable": _nottable,
    "_field": _field,
    "_aggadd": _aggadd,
    "_gett": compact.gettable,
    "_sett": compact.settable,
    "_addt": compact.addtable,
    "_add": compact.add,
    "_sub": compact.sub,
    "_mul": compact.mul,
    "_neg": compact.neg,
    "_lt": compact.lt,
    "_le": compact.le,
    "_i64": compact.int64,
    "_tail": compact.make_tail(_Tail),
    "len": len,
    "str": str,
    "int": int,
    "BaseException": BaseException,
    "range": range,
}


class Machine:
    """One program's run-time state.  Not thread-safe; one per session."""

    def __init__(self, verified: VerifiedProgram, *, emit: Callable[[Record], None],
                 limits: RuntimeLimits = DEFAULT_LIMITS, timestamps: bool = False,
                 symbolize: Callable[[int], str] | None = None):
        if not isinstance(verified, VerifiedProgram):
            raise TypeError("Machine needs a VerifiedProgram (see ktapd.verifier.verify)")
        for f in dataclasses.fields(limits):
            value = getattr(limits, f.name)
            if value.__class__ is not int or value < 0:
                raise ValueError(f"runtime limit {f.name} must be a non-negative integer")
        self.program = verified.program
        self.limits = limits
        self.timestamps = timestamps  # stamp Text records with the event time (-T)
        self.symbolize = symbolize  # kernel address -> symbol, for ipof()
        self.registrations: list[Registration] = []
        self.end_handlers: list[Callable] = []
        self._exit_requested = False
        self.failed = False
        self._emit = emit
        self._out: list[str] = []
        self._in_main = False
        self._process = ProcessContext()

        source = translate.translate_program(
            self.program, string_bytes=limits.string_bytes,
            table_entries=limits.table_entries, call_depth=limits.call_depth,
            handler_steps=limits.handler_steps)
        self._origin = source.origin
        ns: dict = {"__builtins__": {}}
        ns.update(_HELPERS)
        ns.update(source.strings)
        for ident, impl in enumerate(Library(self).bound()):
            ns[f"B{ident}"] = impl
        ns["_register"] = self._register
        ns["E"] = self._process
        ns["S"] = 0
        ns["H"] = False  # halted: failed or exit requested
        ns["P"] = self._process
        ns["HSTEPS"] = limits.handler_steps
        ns["OUT"] = self._out
        ns["_flush"] = self._flush
        ns["_caught"] = self._caught
        ns["_tramp"] = self._trampoline
        ns["M"] = self
        ns["_call"] = compact.make_call(ns, _Tail, limits.call_depth, _budget, _overflow)
        self._ns = ns
        exec(compile(source.text(), translate.FILENAME, "exec"), ns)  # noqa: S102 - fixed templates
        self.run_handler = ns["run_handler"]
        self._main = ns["_mk0"]()
        # The code object of each function with an inline copy in
        # run_handler -> (its slot, the upvalue cells that copy unpacks).
        self._inline: dict[CodeType, tuple[int, tuple[str, ...]]] = {}
        for slot, (index, cell_names) in enumerate(source.inline, start=1):
            for code in ns[f"_mk{index}"].__code__.co_consts:
                if isinstance(code, CodeType) and code.co_name == f"f{index}":
                    self._inline[code] = (slot, cell_names)

    # --- entry points -------------------------------------------------------

    def run_main(self, args: list) -> bool:
        """Run the main chunk with ``arg`` built from args; False after a run-time error."""
        arg = Table(max(self.limits.table_entries, len(args)))
        for n, word in enumerate(args):
            if n and isinstance(word, str) and _DECIMAL.match(word):
                number = int(word)
                if INT64_MIN <= number <= INT64_MAX:
                    word = number
            arg.d[n] = word
        self._in_main = True
        try:
            return self._run(self._main, (arg,), None, self.limits.main_steps)
        finally:
            self._in_main = False

    def run_handler(self, reg: Registration, event) -> bool:
        """Run one probe/timer handler for ``event`` (None for tick timers);
        False after a run-time error.  Replaced in __init__ by the
        generated run_handler (translate.py), which does the same with the
        handler bodies inline."""
        if self._halted():
            return not self.failed
        ns = self._ns
        ns["E"] = self._process if event is None else event
        ns["S"] = self.limits.handler_steps
        return self._call(reg.handler, ())

    def run_end(self) -> bool:
        """Run the trace_end handler(s), if registered, with the main-chunk budget."""
        for handler in self.end_handlers:
            if not self._run(handler, (), None, self.limits.main_steps):
                return False
        return not self.failed

    # --- for the builtins ---------------------------------------------------

    def event(self):
        """The current event, or None outside events."""
        event = self._ns["E"]
        return None if event is self._process else event

    @property
    def exit_requested(self) -> bool:
        """exit() was called: the session should stop tracing (trace_end still runs)."""
        return self._exit_requested

    def request_exit(self) -> None:
        self._exit_requested = True
        self._ns["H"] = True

    def _halted(self) -> bool:
        return self.failed or self._exit_requested

    def write(self, text: str) -> None:
        out = self._out
        out.append(text)
        if len(out) >= _FLUSH_EVERY:
            self._flush()

    def emit_record(self, record: Record) -> None:
        if self._out:
            self._flush()
        self._emit(record)

    # --- internals ----------------------------------------------------------

    def _run(self, function, args: tuple, event, steps: int) -> bool:
        if self.failed:
            return False
        ns = self._ns
        ns["E"] = self._process if event is None else event
        ns["S"] = steps
        return self._call(function, args)

    def _call(self, function, args: tuple) -> bool:
        try:
            result = function(*args)
            if result.__class__ is _Tail:
                self._trampoline(result)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a record
            return self._caught(exc)
        if self._out:
            self._flush()
        return True

    def _trampoline(self, tail: _Tail) -> None:
        ns = self._ns
        while tail.__class__ is _Tail:
            ns["S"] -= 1
            if ns["S"] < 0:
                _budget()
            tail = tail.f(*tail.a)

    def _caught(self, exc: BaseException) -> bool:
        if isinstance(exc, ExitSignal):
            if self._out:
                self._flush()
            return True
        if isinstance(exc, KtapError):
            message = str(exc)
        elif isinstance(exc, RecursionError):
            message = STACK_OVERFLOW
        elif isinstance(exc, MemoryError):
            message = "out of memory"
        elif isinstance(exc, Exception):
            message = f"internal error: {type(exc).__name__}: {exc}"
        else:
            raise exc  # KeyboardInterrupt, SystemExit: not ours to swallow
        line = self._line_of(exc.__traceback__)
        self.failed = True
        self._ns["H"] = True
        if self._out:
            self._flush()
        self._emit(Error(message=message, source=self.program.source_name, line=line))
        return False

    def _line_of(self, tb) -> int:
        """Script line of the innermost generated frame in a traceback."""
        found = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == translate.FILENAME:
                found = tb.tb_lineno
            tb = tb.tb_next
        if found is None or not 0 < found <= len(self._origin):
            return 0
        function, pc = self._origin[found - 1]
        if function < 0:  # run_handler's own lines
            return 0
        return self.program.functions[function].lines[pc]

    def _flush(self) -> None:
        text = "".join(self._out)
        self._out.clear()
        stamp = 0
        if self.timestamps:
            event = self.event()
            if event is not None:
                stamp = event.time_ns
        self._emit(Text(text=text, time_ns=stamp))

    def _register(self, index: int, handler: object) -> None:
        probe = self.program.probes[index]
        if not self._in_main:
            raise KtapError(f"{probe.kind} only can be called in RUNNING state")
        if handler.__class__ is not FunctionType:
            raise KtapError(f"a {probe.kind} handler must be a function, "
                            f"got {values.type_name(handler)}")
        if probe.kind == PROBE_END:
            self.end_handlers.append(handler)
        else:
            self.registrations.append(Registration(index, probe, handler,
                                                   *self._inline_copy(handler)))

    def _inline_copy(self, handler: FunctionType) -> tuple[int, tuple]:
        """run_handler's slot for this closure's body and the cells it
        needs (the closure's own), or (0, ()) to call the closure."""
        code = handler.__code__
        found = self._inline.get(code)
        if found is None:
            return 0, ()
        slot, cell_names = found
        closure = dict(zip(code.co_freevars, handler.__closure__ or (), strict=True))
        try:
            return slot, tuple(closure[name].cell_contents for name in cell_names)
        except (KeyError, ValueError):  # not the cells the copy expects: call it
            return 0, ()
