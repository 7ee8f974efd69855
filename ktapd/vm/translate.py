"""Verified bytecode -> Python source, from fixed templates (DESIGN.md decision 2).

Each ktap function becomes a factory ``_mkN(u0, u1, ...)`` that returns a
Python function ``fN(r0=None, ...)``: registers are Python locals ``rI``,
upvalue cells are the factory's arguments ``uI`` (so a CLOSURE is one call
that binds cells), boxed registers hold one-element lists (cells).  The
structured control flow maps one-to-one: IF/ELSE/END -> if/else, LOOP ->
``while True``, FORNUM -> ``for rA in range``, FORPAIRS -> ``for`` over a
snapshot, BREAK -> ``break``.

Rules that keep this safe (the verifier has already checked every index):

- No program-supplied text ever becomes source.  Every identifier is a
  fixed prefix plus an integer; strings (constants, upvalue names) travel
  in the namespace dict as globals named ``cF_K`` / ``nF_U``; only integer
  constants, None and booleans are written as literals, via ``int.__repr__``.
- The generated module sees no Python builtins (``__builtins__`` is empty);
  every helper it calls is put into its namespace by the machine.
- Every loop pass and every call decrements the global step budget ``S``
  (a local ``s`` in functions with loops, synced around calls); non-tail
  calls pass their depth on as the keyword argument ``_depth``, checked
  against the call depth limit.  ``return f(x)`` returns a
  ``_Tail`` that the caller's trampoline runs, so tail calls use no Python
  stack.

The module ends with ``run_handler(reg, event)``, the machine's per-event
entry point (DESIGN.md decision 2: the cost of an event should be close to
one plain Python call).  For each function the program registers as a
handler right after making it (CLOSURE then REGISTER), run_handler holds a
second translation of its body, inline, selected by ``reg.inline``; the
handler's upvalue cells come from ``reg.cells``.  So an event costs one
Python frame, not two, and the inline body sets the event (``E``) and the
budget (``S``) only if it can read them, and checks for output only if it
can write some (or may call a script function that can).  Any other
registered function, and any past ``MAX_INLINE_HANDLERS``, runs through
the generic tail of run_handler, which calls it.  The machine pairs each
registered closure with its slot by the closure's code object and reads
the cells out of the closure (Machine._inline_copy).

``Source.origin`` maps each generated source line back to (function, pc), so a
run-time error can name the script line without per-instruction
bookkeeping on the hot path.

The handful of peepholes (integer constants folded into arithmetic and
``+=`` when a register is known, in straight-line code, to hold one) only
remove type checks that cannot fail, overflow tests that operand signs
rule out, and stores of integer constants that nothing reads by name
(every use got the literal).  This module must not import the
probes, trio or ktapctl.
"""

from __future__ import annotations

import re
from collections import Counter

from ktapd.vm import compact
from protocol import limits as L
from protocol.bytecode import opcodes as op
from protocol.bytecode.builtins import BUILTINS, EVENT_VARS
from protocol.bytecode.program import PROBE_END, UPVAL_FROM_BOX, Function, Program

FILENAME = "<ktap>"
MAX = repr(L.INT64_MAX)
MIN = repr(L.INT64_MIN)

# Event variables read as plain attributes of the context (argN and argstr
# have their own templates below).
_PLAIN_EVENT_ATTRS = {"pid", "tid", "uid", "cpu", "execname", "probename"}
# Those the EventContext protocol types as str (ktapd/vm/context.py): as
# table keys they need no normalising.
_STR_EVENT_ATTRS = {"execname", "probename"}


class Source:
    """Generated lines plus, for each, the (function, pc) it came from."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.origin: list[tuple[int, int]] = []
        self.strings: dict[str, str] = {}  # global name -> string value
        # run_handler's inline bodies: slot k (from 1) -> (function index,
        # names of the upvalue cells the body unpacks from reg.cells).
        self.inline: list[tuple[int, tuple[str, ...]]] = []

    def add(self, depth: int, text: str, where: tuple[int, int]) -> None:
        self.lines.append("    " * depth + text)
        self.origin.append(where)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def translate_program(program: Program, *, string_bytes: int, table_entries: int,
                      call_depth: int, handler_steps: int | None = None) -> Source:
    """The whole program as one module's source (call after verify()).
    ``handler_steps``, when given, lets inline handlers start their budget
    from a literal (it must equal the machine's HSTEPS)."""
    src = Source()
    # A large program gets one line per instruction (compact.py): CPython's
    # compiler cost grows with the lines of the whole module.
    size = sum(len(f.code) for f in program.functions)
    use_compact = size > compact.COMPACT_THRESHOLD
    settings = (string_bytes, table_entries, call_depth)
    for index, function in enumerate(program.functions):
        _FunctionTranslator(src, program, index, function, *settings, use_compact).run()
    _dispatch(src, program, settings, handler_steps,
              () if use_compact else registered_functions(program))
    return src


# Origin of run_handler's own lines: no script line.
NO_ORIGIN = (-1, 0)
# Inline bodies are picked by a chain of tests; past this many handlers the
# rest run through the generic call (a test costs about what the call saves).
MAX_INLINE_HANDLERS = 8
# An inline copy is compiled twice (as itself and inline), which is load
# time; the frame it saves matters less the longer the handler runs.  So
# only handlers up to this many instructions, and this many in all, are
# copied (a typical script's handlers are a few dozen).
MAX_INLINE_SIZE = 256
MAX_INLINE_TOTAL = 512


def _dispatch(src: Source, program: Program, settings: tuple, handler_steps: int | None,
              handlers) -> None:
    """Emit run_handler: inline bodies for ``handlers``, then the generic call."""
    def add(depth: int, text: str) -> None:
        src.add(depth, text, NO_ORIGIN)
    add(0, "def run_handler(_reg, _ev):")
    add(1, "global E, S")
    add(1, "if H:")
    add(2, "return not M.failed")
    add(1, "try:")
    chosen, total = [], 0
    for index in handlers:
        size = len(program.functions[index].code)
        if size <= MAX_INLINE_SIZE and total + size <= MAX_INLINE_TOTAL:
            chosen.append(index)
            total += size
    if chosen:
        add(2, "_n = _reg.inline")
    for slot, index in enumerate(chosen[:MAX_INLINE_HANDLERS], start=1):
        add(2, f"if _n == {slot}:")
        body = _FunctionTranslator(src, program, index, program.functions[index], *settings,
                                   False, entry=True, handler_steps=handler_steps)
        body.run()
        src.inline.append((index, body.cell_names))
    add(2, "E = P if _ev is None else _ev")
    add(2, "S = HSTEPS")
    add(2, "_x = _reg.handler()")
    add(2, "if _x.__class__ is _Tail:")
    add(3, "_tramp(_x)")
    add(2, "if OUT:")
    add(3, "_flush()")
    add(2, "return True")
    add(1, "except BaseException as exc:")
    add(2, "return _caught(exc)")


def registered_functions(program: Program) -> list[int]:
    """Functions registered as handlers right where they are made: a
    REGISTER of a register whose last write was a CLOSURE (what the
    compiler emits for every trace/tick/profile block), in program order.
    A guess is enough: run_handler checks what was really registered."""
    found: list[int] = []
    for f in program.functions:
        made: dict[int, int] = {}  # register -> function its CLOSURE made
        for ins in f.code:
            number = ins[0]
            if number == op.REGISTER:
                child = made.get(ins[2])
                if child is not None and child not in found and (
                        program.probes[ins[1]].kind != PROBE_END):
                    found.append(child)
                continue
            for position, kind in enumerate(op.OPCODES[number].operands, start=1):
                if kind == "w":
                    made.pop(ins[position], None)
            if number == op.CLOSURE:
                made[ins[1]] = ins[2]
    return found


def upvalues_used(functions, f: Function) -> list[int]:
    """Upvalues the translated body names (``uI``): read, written or passed
    on to a closure it makes."""
    used = set()
    for ins in f.code:
        if ins[0] == op.GETUPVAL:
            used.add(ins[2])
        elif ins[0] == op.SETUPVAL:
            used.add(ins[1])
        elif ins[0] == op.CLOSURE:
            used.update(up.index for up in functions[ins[2]].upvalues
                        if up.kind != UPVAL_FROM_BOX)
    return sorted(used)


class _FunctionTranslator:
    """Emits one function: a factory taking its upvalue cells, returning the
    Python function; or, with ``entry``, the same body as one of
    run_handler's inline handlers (see the module docstring).  Tracks a little straight-line knowledge about
    registers (known integer constants, known ints, which upvalue a table
    came from) to drop type tests that cannot fail and to name tables in
    overflow errors."""

    def __init__(self, src: Source, program: Program, index: int, f: Function,
                 string_bytes: int, table_entries: int, call_depth: int, use_compact: bool,
                 entry: bool = False, handler_steps: int | None = None):
        assert not (entry and use_compact), "inline handlers use the inline templates"
        self.handler_steps = handler_steps
        self.first_step_at: int | None = None  # entry: pc of a step charged from a literal
        self.src = src
        self.entry = entry
        self.cell_names: tuple[str, ...] = ()  # entry: the cells unpacked from reg.cells
        self.may_output = True  # entry: whether the body can write output
        self.functions = program.functions
        self.index = index
        self.f = f
        self.slim = repr(int(string_bytes))
        self.tlim = repr(int(table_entries))
        self.dmax = repr(int(call_depth))
        self.depth = 0
        self.pc = 0
        # Straight-line knowledge, forgotten at every block boundary:
        self.const: dict[int, str] = {}  # register -> literal int it holds
        self.ints: set[int] = set()  # registers known to hold an int
        self.nonneg: set[int] = set()  # registers known to hold an int >= 0
        self.strs: set[int] = set()  # registers known to hold a str
        # Loop variables the loop's body never writes: what is known of them
        # holds in the whole body.  register -> (known int, known >= 0).
        self.pinned: dict[int, tuple[bool, bool]] = {}
        # Integer constant stores that may be dead: register -> line index.
        self.pending: dict[int, int] = {}
        # (register, line) of pending stores the current instruction overwrites
        self.overwritten: list[tuple[int, int]] = []
        self.origin: dict[int, int] = {}  # register -> upvalue it was read from
        # Registers that only ever receive integers hold an int whenever they
        # are read (they start at 0 instead of nil), so their type tests go.
        self.static_ints = int_registers(f)
        self.compact = use_compact
        # A function with loops keeps its budget in the local ``s`` (cheaper
        # than the global) and syncs the global ``S`` around calls and returns.
        has_loops = any(op.OPCODES[ins[0]].block == op.LOOP_OPENS for ins in f.code)
        self.budget = "s" if has_loops and not self.compact else "S"

    # --- emission helpers -------------------------------------------------

    def emit(self, text: str) -> None:
        self.src.add(self.depth, text, (self.index, self.pc))

    # Dead constant stores.  ``rA = 5`` is emitted at once and remembered
    # while straight-line code runs on; if the function returns, or the
    # instruction overwriting rA ends, and no line since names rA except as
    # the target of an assignment, the store is dead and becomes ``pass``
    # (no bytecode).  Any block boundary or break keeps every store.
    def keep_constants(self) -> None:
        self.pending.clear()

    def drop_dead_constants(self, stores) -> None:
        """Turn each (register, line) store that no later line reads into ``pass``."""
        lines = self.src.lines
        for reg, at in stores:
            if len(lines) - at > _DEAD_STORE_WINDOW:
                continue
            name = f"r{reg}"
            number = name[1:]
            for line in lines[at + 1:]:
                text = line.lstrip()
                if text.startswith(name + " = "):
                    text = text[len(name) + 3:]
                if name in text and number in register_mentions(text):
                    break
            else:
                lines[at] = lines[at][:len(lines[at]) - len(lines[at].lstrip())] + "pass"

    def forget(self) -> None:
        self.keep_constants()
        self.const.clear()
        self.ints.clear()
        self.nonneg.clear()
        self.strs.clear()
        self.origin.clear()
        for reg, (is_int, nonneg) in self.pinned.items():
            if is_int:
                self.ints.add(reg)
            if nonneg:
                self.nonneg.add(reg)

    def wrote(self, reg: int) -> None:
        if reg in self.pending:
            self.overwritten.append((reg, self.pending.pop(reg)))
        self.const.pop(reg, None)
        self.ints.discard(reg)
        self.nonneg.discard(reg)
        self.strs.discard(reg)
        self.origin.pop(reg, None)

    def reg(self, r: int) -> str:
        """A register read: its known integer literal, or its local."""
        return self.const.get(r, f"r{r}")

    def string_const(self, k: int) -> str:
        name = f"c{self.index}_{k}"
        self.src.strings[name] = self.f.constants[k]
        return name

    def table_name(self, r: int) -> str:
        """Global holding the upvalue name the table in register r came from."""
        up = self.origin.get(r)
        if up is None or not self.f.upvalues[up].name:
            return "None"
        name = f"n{self.index}_{up}"
        self.src.strings[name] = self.f.upvalues[up].name
        return name

    def key(self, r: int) -> str:
        """The dict key for register r: the register itself when it is known
        to hold an int or a str (their own keys), else ``_k``, emitted here."""
        if self.is_int(r) or r in self.strs:
            return self.reg(r)
        self.emit(f"_k = r{r}")
        self.emit("if _k.__class__ is not str and _k.__class__ is not int: _k = _key(_k)")
        return "_k"

    def is_int(self, r: int) -> bool:
        return r in self.ints or r in self.const or r in self.static_ints

    def is_nonpositive(self, r: int) -> bool:
        """Known to hold an integer constant <= 0."""
        literal = self.const.get(r)
        return literal is not None and (literal == "0" or literal.startswith("("))

    def step(self) -> None:
        if self.pc == self.first_step_at:  # the budget is still whole: no arithmetic
            steps = int(self.handler_steps) - 1
            self.emit(f"S = {steps}" if steps >= 0 else "_budget()")
            return
        self.emit(f"{self.budget} -= 1")
        self.emit(f"if {self.budget} < 0: _budget()")

    def sync_budget(self) -> None:
        """Before leaving the function or calling: the global budget is the truth."""
        if self.budget == "s":
            if self.leaf_active is None:
                self.emit("S = s")
            else:  # the passes of the leaf loop so far are not charged yet
                n = self.leaf_active
                self.emit(f"S = s - _r{n}.index({self.leaf_value}) - 1")

    def int_check(self, regs: list[int]) -> bool:
        """Open an ``if`` that holds when every register is an int; False if
        they are all known ints already (no test emitted)."""
        tests = [f"r{r}.__class__ is int" for r in regs if not self.is_int(r)]
        if not tests:
            return False
        self.emit(f"if {' and '.join(tests)}:")
        return True

    # --- the function -------------------------------------------------------

    def run(self) -> None:
        f = self.f
        self.pc = 0
        first_line = len(self.src.lines)
        if self.entry:
            # Inside run_handler's ``if _n == slot:`` (which sits in its try).
            self.depth = 3
            self.entry_prologue()
            first_nil = 0  # a handler gets no arguments
        else:
            upvals = ", ".join(f"u{i}" for i in range(len(f.upvalues)))
            self.emit(f"def _mk{self.index}({upvals}):")
            self.depth = 1
            params = "".join(f"r{i}=None, " for i in range(f.nparams))
            # _depth: how many non-tail calls deep this call runs (0 for handlers
            # and the main chunk); a local, so a call costs no global stores.
            self.emit(f"def f{self.index}({params}*_x, _depth=0):")
            self.depth = 2
            self.emit("global S")
            first_nil = f.nparams
        assigned = assigned_first(f)
        nils = [f"r{i}" for i in range(first_nil, f.nregs)
                if i not in self.static_ints and i not in assigned]
        zeros = [f"r{i}" for i in sorted(self.static_ints - assigned)]
        if nils:
            self.emit(" = ".join(nils) + " = None")
        if zeros:
            self.emit(" = ".join(zeros) + " = 0")
        if self.budget == "s":
            self.emit("s = HSTEPS" if self.entry else "s = S")
        for r in f.boxed:
            # A boxed parameter arrives as a plain value; every other boxed
            # register starts as a fresh cell so GETBOX before NEWBOX is nil.
            self.emit(f"r{r} = [r{r}]" if r < first_nil else f"r{r} = [None]")
        self.leaf_open, self.leaf_close, self.leaf_untouched = (
            (frozenset(), frozenset(), frozenset()) if self.compact else leaf_loops(f))
        self.unwritten_vars = unwritten_loop_vars(f)
        self.unwritten_ends = {end: start for start, end in self.unwritten_vars.items()}
        self.leaf_active: int | None = None  # block depth of the leaf loop we are in
        self.leaf_value = ""  # expression holding that loop's current value
        templates = _COMPACT_TEMPLATES if self.compact else _TEMPLATES
        for pc, ins in enumerate(f.code):
            self.pc = pc
            templates[ins[0]](self, *ins[1:])
            if self.overwritten:
                self.drop_dead_constants(self.overwritten)
                self.overwritten.clear()
            if ins[0] in _RETURNS:  # no path goes on from here
                self.drop_dead_constants(list(self.pending.items()))
                self.pending.clear()
        if self.entry:
            self.depth = 3
            if not f.code or f.code[-1][0] not in (op.RETURN, op.RETURN0, op.TAILCALL):
                self.leave()  # never fall through to the generic call
        else:
            self.depth = 1
            self.emit(f"return f{self.index}")
        if not self.compact:  # (compact mode exists to keep loading cheap)
            drop_unread_constants(self.src.lines, first_line)

    def entry_prologue(self) -> None:
        """What a handler needs set before its inline body runs: the event
        if anything can read it, the budget if anything can spend it, its
        upvalue cells."""
        numbers = {ins[0] for ins in self.f.code}
        # Builtins may read the event and write output (whose flush reads
        # the event's time); so may script functions, if any of them reads
        # the event or calls a builtin.
        builtins = op.CALLB in numbers or (
            bool(numbers & {op.CALL, op.TAILCALL}) and any(
                ins[0] in (op.CALLB, op.EVAR, op.EFIELD)
                for f in self.functions[1:] for ins in f.code))
        if builtins or numbers & {op.EVAR, op.EFIELD}:
            self.emit("E = P if _ev is None else _ev")
        self.may_output = builtins
        spends = numbers & {op.CALL, op.TAILCALL} or any(
            ins[0] == op.CALLB and ins[2] == _PRINT_HIST for ins in self.f.code)
        if self.budget == "S" and spends:
            self.first_step_at = self.first_call()
            if self.first_step_at is None:
                self.emit("S = HSTEPS")
        used = upvalues_used(self.functions, self.f)
        if used:
            self.cell_names = tuple(f"u{i}" for i in used)
            self.emit(f"{', '.join(self.cell_names)}, = _reg.cells")

    def first_call(self) -> int | None:
        """The pc of a CALL that spends the first step of an inline handler
        whose start is straight-line code (if handler_steps is known)."""
        if self.handler_steps is None:
            return None
        for pc, ins in enumerate(self.f.code):
            if ins[0] == op.CALL:
                return pc
            if (op.OPCODES[ins[0]].block != op.FLAT or ins[0] in (op.BREAK, op.TAILCALL)
                    or (ins[0] == op.CALLB and ins[2] == _PRINT_HIST)):
                return None
        return None

    def leave(self) -> None:
        """An inline handler's return: flush its output, report success.
        (The budget need not be synced: the next run resets it.)"""
        if self.may_output:
            self.emit("if OUT: _flush()")
        self.emit("return True")


# --- templates, one per opcode -------------------------------------------------
# Each takes the translator and the instruction's operands.


def _move(t: _FunctionTranslator, a: int, b: int) -> None:
    t.emit(f"r{a} = {t.reg(b)}")
    const, is_int, origin = t.const.get(b), b in t.ints, t.origin.get(b)
    nonneg, is_str = b in t.nonneg, b in t.strs
    t.wrote(a)
    if is_str:
        t.strs.add(a)
    if const is not None:
        t.const[a] = const
    if is_int:
        t.ints.add(a)
    if nonneg:
        t.nonneg.add(a)
    if origin is not None:
        t.origin[a] = origin


def _loadk(t: _FunctionTranslator, a: int, k: int) -> None:
    value = t.f.constants[k]
    t.wrote(a)
    if value is None or value is True or value is False:
        t.emit(f"r{a} = {value!r}")
    elif value.__class__ is int:
        literal = repr(int(value))
        t.emit(f"r{a} = {literal}")
        if not t.compact:
            t.pending[a] = len(t.src.lines) - 1
        t.const[a] = f"({literal})" if value < 0 else literal
        t.ints.add(a)
        if value >= 0:
            t.nonneg.add(a)
    else:
        t.emit(f"r{a} = {t.string_const(k)}")
        t.strs.add(a)


def _loadnil(t, a):
    t.wrote(a)
    t.emit(f"r{a} = None")


def _loadbool(t, a, b):
    t.wrote(a)
    t.emit(f"r{a} = {'True' if b else 'False'}")


def _newbox(t, x):
    t.emit(f"r{x} = [None]")


def _getbox(t, a, x):
    t.wrote(a)
    t.emit(f"r{a} = r{x}[0]")


def _setbox(t, x, b):
    t.emit(f"r{x}[0] = {t.reg(b)}")


def _getupval(t, a, u):
    t.wrote(a)
    t.origin[a] = u
    t.emit(f"r{a} = u{u}[0]")


def _setupval(t, u, b):
    t.emit(f"u{u}[0] = {t.reg(b)}")


def _closure(t, a, child):
    cells = []
    for up in t.functions[child].upvalues:
        cells.append(f"r{up.index}" if up.kind == UPVAL_FROM_BOX else f"u{up.index}")
    t.wrote(a)
    t.emit(f"r{a} = _mk{child}({', '.join(cells)})")


def _newtable(t, a):
    t.wrote(a)
    t.emit(f"r{a} = _T({t.tlim})")


def _table(t, r: int) -> str:
    """Check register r holds a table; return the expression naming it."""
    t.emit(f"if r{r}.__class__ is not _T: _nottable(r{r})")
    return f"r{r}"


def _gettable(t, a, b, c):
    table = _table(t, b)
    key = t.key(c)
    t.wrote(a)
    t.emit(f"r{a} = {table}.d.get({key})")


def _settable(t, a, b, c):
    table = _table(t, a)
    key = t.key(b)
    name = t.table_name(a)
    full = f"if len(_d) >= {table}.limit and {key} not in _d: _tfull({table}, {name})"
    if c in t.const or c in t.strs:  # never nil
        t.emit(f"_d = {table}.d")
        t.emit(full)
        t.emit(f"_d[{key}] = {t.reg(c)}")
        return
    t.emit(f"if r{c} is None: {table}.d.pop({key}, None)")
    t.emit("else:")
    t.depth += 1
    t.emit(f"_d = {table}.d")
    t.emit(full)
    t.emit(f"_d[{key}] = r{c}")
    t.depth -= 1


def _addtable(t, a, b, c):
    table = _table(t, a)
    key = t.key(b)
    name = t.table_name(a)
    if not t.is_int(c):
        t.emit(f"if r{c}.__class__ is not int: _arith(r{c})")
    t.emit(f"_d = {table}.d")
    t.emit(f"_o = _d.get({key})")
    # An existing entry must be a number; a new one counts as 0 and must fit.
    t.emit("if _o.__class__ is not int:")
    t.emit("    if _o is not None: _arith(_o)")
    t.emit(f"    if len(_d) >= {table}.limit: _tfull({table}, {name})")
    t.emit("    _o = 0")
    t.emit(f"_o += {t.reg(c)}")
    test = _out_of_range("_o", low=c not in t.nonneg, high=not t.is_nonpositive(c))
    if test:
        t.emit(f"if {test}: _o = _wrap(_o)")
    t.emit(f"_d[{key}] = _o")


def _out_of_range(name: str, *, low: bool, high: bool) -> str:
    """The int64 overflow test of a result that may fall below INT64_MIN
    (``low``) and may rise above INT64_MAX (``high``); "" when neither."""
    tests = ([f"{name} > {MAX}"] if high else []) + ([f"{name} < {MIN}"] if low else [])
    return " or ".join(tests)


def _may_overflow(t, symbol: str, b: int, c: int) -> tuple[bool, bool]:
    """Which way ``R[b] symbol R[c]`` may leave int64, from operand signs:
    adding a non-negative number cannot go below INT64_MIN, adding a
    non-positive one cannot go above INT64_MAX; x - y with y >= 0 cannot
    rise, with y <= 0 or x >= 0 cannot fall."""
    if symbol == "+":
        return (b not in t.nonneg and c not in t.nonneg,
                not t.is_nonpositive(b) and not t.is_nonpositive(c))
    if symbol == "-":
        return (not t.is_nonpositive(c) and b not in t.nonneg, c not in t.nonneg)
    return True, True


def _aggtable(t, a, b, c):
    t.emit(f"_aggadd(r{a}, r{b}, {t.reg(c)}, {t.table_name(a)})")


def _arith(symbol: str):
    def template(t, a, b, c):
        opened = t.int_check([b, c])
        if opened:
            t.depth += 1
        t.emit(f"r{a} = {t.reg(b)} {symbol} {t.reg(c)}")
        low, high = _may_overflow(t, symbol, b, c)
        test = _out_of_range(f"r{a}", low=low, high=high)
        if test:
            t.emit(f"if {test}: r{a} = _wrap(r{a})")
        if opened:
            t.depth -= 1
            t.emit(f"else: _arith({t.reg(b)}, {t.reg(c)})")
        t.wrote(a)
        t.ints.add(a)
    return template


def _helper_arith(helper: str):
    def template(t, a, b, c):
        t.emit(f"r{a} = {helper}({t.reg(b)}, {t.reg(c)})")
        t.wrote(a)
        t.ints.add(a)
    return template


def _concat(t, a, b, c):
    t.emit(f"if r{b}.__class__ is str and r{c}.__class__ is str:")
    t.depth += 1
    t.emit(f"r{a} = r{b} + r{c}")
    t.emit(f"if len(r{a}) > {t.slim}: _strlong({t.slim})")
    t.depth -= 1
    t.emit(f"else: r{a} = _concat(r{b}, r{c}, {t.slim})")
    t.wrote(a)
    t.strs.add(a)


def _eq(t, a, b, c):
    t.emit(f"r{a} = r{b}.__class__ is r{c}.__class__ and r{b} == r{c}")
    t.wrote(a)


def _ne(t, a, b, c):
    t.emit(f"r{a} = r{b}.__class__ is not r{c}.__class__ or r{b} != r{c}")
    t.wrote(a)


def _order(symbol: str):
    def template(t, a, b, c):
        opened = t.int_check([b, c])
        if opened:
            t.depth += 1
        t.emit(f"r{a} = {t.reg(b)} {symbol} {t.reg(c)}")
        if opened:
            t.depth -= 1
            t.emit(f"else: _cmperr({t.reg(b)}, {t.reg(c)})")
        t.wrote(a)
    return template


def _not(t, a, b):
    t.emit(f"r{a} = r{b} is None or r{b} is False")
    t.wrote(a)


def _neg(t, a, b):
    if not t.is_int(b):
        t.emit(f"if r{b}.__class__ is not int: _arith(r{b})")
    t.emit(f"r{a} = -r{b}")
    t.emit(f"if r{a} > {MAX}: r{a} = {MIN}")
    t.wrote(a)
    t.ints.add(a)


def _if(t, a):
    # Knowledge from before the IF still holds inside its body; constant
    # stores before it are kept (the body may not run).
    t.keep_constants()
    t.emit(f"if r{a} is not None and r{a} is not False:")
    t.depth += 1
    t.emit("pass")


def _else(t):
    t.forget()
    t.depth -= 1
    t.emit("else:")
    t.depth += 1
    t.emit("pass")


def _loop(t):
    t.forget()
    t.emit("while True:")
    t.depth += 1
    t.step()


def _fornum(t, a, b, c, d):
    # The operands are read once, before the loop: what is known about them
    # still holds here.  The common `for (i = x, y)` (step 1, integer
    # bounds) needs no helper call and no length computation.
    simple = t.const.get(d) == "1" and t.is_int(b) and t.is_int(c)
    first, last = t.reg(b), t.reg(c)
    numbers = f"range({first}, {last} + 1)" if simple else f"_fornum(r{b}, r{c}, r{d})"
    # Every value lies between the start and the limit: none is negative
    # when the one it starts from is not.
    step = t.const.get(d)
    if step is None or step == "0":
        nonneg = False
    else:
        nonneg = (c if step.startswith("(") else b) in t.nonneg
    t.forget()
    if t.pc in t.unwritten_vars:
        t.pinned[a] = (True, nonneg)
    if t.pc not in t.leaf_open:
        t.emit(f"for r{a} in {numbers}:")
        t.depth += 1
        t.step()
        t.ints.add(a)
        if nonneg:
            t.nonneg.add(a)
        return
    # A leaf loop (no calls, no inner loops) is the only thing spending
    # budget while it runs, so it is charged once at its end, exactly: the
    # range is cut to the budget left (one pass more raises), and the
    # passes done are the index of the last value (range.index is O(1)).
    n = t.depth
    fits = f"{last} - {first} < {t.budget}" if simple else f"len(_r{n}) <= {t.budget}"
    t.emit(f"_r{n} = {numbers}")
    loop = f"(_r{n} if {fits} else _clip(_r{n}, {t.budget}))"
    if t.pc in t.leaf_untouched:
        # The loop variable itself says how far the loop got.
        t.emit(f"for r{a} in {loop}:")
        t.leaf_value = f"r{a}"
    else:
        t.emit(f"_i{n} = None")
        t.emit(f"for _i{n} in {loop}:")
        t.leaf_value = f"_i{n}"
    t.depth += 1
    t.emit("pass")  # the body may be empty
    if t.leaf_value != f"r{a}":
        t.emit(f"r{a} = _i{n}")
    t.ints.add(a)
    if nonneg:
        t.nonneg.add(a)
    t.leaf_active = n


def _end(t):
    opener = t.unwritten_ends.get(t.pc)
    if opener is not None:  # after the loop it may hold what it held before
        t.pinned.pop(t.f.code[opener][1], None)
    t.forget()
    t.depth -= 1
    if t.pc in t.leaf_close:
        n = t.depth
        # A non-empty range ran at least once (a cut range that ran zero
        # times raised instead of getting here).
        ran = f"_r{n}" if t.leaf_value.startswith("r") else f"_i{n} is not None"
        t.emit(f"if {ran}: {t.budget} -= _r{n}.index({t.leaf_value}) + 1")
        t.leaf_active = None


def assigned_first(f: Function) -> frozenset[int]:
    """Plain registers written before any read in the straight-line start of
    the function: every later instruction sees them assigned, so they need
    no initial value."""
    boxed = set(f.boxed)
    read: set[int] = set()
    written: set[int] = set()
    for ins in f.code:
        row = op.OPCODES[ins[0]]
        if row.block != op.FLAT or ins[0] == op.BREAK:
            break
        operands = ins[1:]
        for position, kind in enumerate(row.operands):
            if kind == "r":
                if position + 1 < len(row.operands) and row.operands[position + 1] == "n":
                    first = operands[position] + (1 if ins[0] in (op.CALL, op.TAILCALL) else 0)
                    read.update(range(first, first + operands[position + 1]))
                    if ins[0] in (op.CALL, op.TAILCALL):
                        read.add(operands[position])
                else:
                    read.add(operands[position])
        for position, kind in enumerate(row.operands):
            if kind == "w" and operands[position] not in read and operands[position] not in boxed:
                written.add(operands[position])
        if ins[0] in (op.RETURN, op.RETURN0, op.TAILCALL):
            break
    return frozenset(written)


def unwritten_loop_vars(f: Function) -> dict[int, int]:
    """FORNUM loops whose body never writes the loop variable: opening pc -> END pc."""
    found: dict[int, int] = {}
    opened: list[int] = []
    for pc, ins in enumerate(f.code):
        kind = op.OPCODES[ins[0]].block
        if kind in (op.OPENS, op.LOOP_OPENS):
            opened.append(pc)
        elif kind == op.CLOSES:
            start = opened.pop()
            if f.code[start][0] != op.FORNUM:
                continue
            var = f.code[start][1]
            if not any(var == body[i] for body in f.code[start + 1:pc]
                       for i, operand in enumerate(op.OPCODES[body[0]].operands, start=1)
                       if operand == "w"):
                found[start] = pc
    return found


def leaf_loops(f: Function) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
    """FORNUM loops whose body has no call and no loop: (opening pcs, END
    pcs, opening pcs of those whose body never writes the loop variable)."""
    opened: list[list] = []  # [pc, opcode, leaf?] per open block
    leaf_open, leaf_close, untouched = set(), set(), set()
    for pc, ins in enumerate(f.code):
        number = ins[0]
        # Anything else that spends budget inside the body (calls, loops,
        # print_hist's charge) makes the loop an ordinary one.
        if number in (op.CALL, op.LOOP, op.FORNUM, op.FORPAIRS) or (
                number == op.CALLB and ins[2] == _PRINT_HIST):
            for block in opened:
                block[2] = False
        block_kind = op.OPCODES[number].block
        if block_kind in (op.OPENS, op.LOOP_OPENS):
            opened.append([pc, number, True])
        elif block_kind == op.CLOSES:
            start, opener, leaf = opened.pop()
            if opener == op.FORNUM and leaf:
                leaf_open.add(start)
                leaf_close.add(pc)
                var = f.code[start][1]
                if not any(var == body[i] for body in f.code[start + 1:pc]
                           for i, kind in enumerate(op.OPCODES[body[0]].operands, start=1)
                           if kind == "w"):
                    untouched.add(start)
    return frozenset(leaf_open), frozenset(leaf_close), frozenset(untouched)


def _forpairs(t, a, b, c):
    t.forget()
    n = t.depth
    t.emit(f"_p{n} = _pairs(r{c})")
    _charge_copy(t, f"len(_p{n})")
    t.emit(f"for r{a}, r{b} in _p{n}:")
    t.depth += 1
    t.step()


# Work that grows with a table's size and is not a loop pass (the snapshot
# of pairs(), the sort of print_hist) is charged one step per
# 2**COPY_SHIFT entries, so a loop repeating it still ends within budget.
COPY_SHIFT = 4


def _charge_copy(t, size: str) -> None:
    t.emit(f"{t.budget} -= {size} >> {COPY_SHIFT}")
    t.emit(f"if {t.budget} < 0: _budget()")


def _break(t):
    t.keep_constants()
    t.emit("break")


def _call(t, a, b, n):
    t.emit(f"if r{b}.__class__ is not _F: _notfn(r{b})")
    if not t.entry:
        t.emit(f"if _depth >= {t.dmax}: _overflow()")
        inner = "_depth + 1"
    else:  # an inline handler runs at depth 0
        if int(t.dmax) <= 0:
            t.emit("_overflow()")
        inner = "1"
    t.step()
    t.sync_budget()
    args = "".join(f"{t.reg(r)}, " for r in range(b + 1, b + 1 + n))
    t.emit(f"r{a} = r{b}({args}_depth={inner})")
    t.emit(f"while r{a}.__class__ is _Tail:")
    t.depth += 1
    t.emit("S -= 1")
    t.emit("if S < 0: _budget()")
    t.emit(f"r{a} = r{a}.f(*r{a}.a, _depth={inner})")
    t.depth -= 1
    if t.budget == "s":
        t.emit("s = S")
    t.wrote(a)


def _tailcall(t, a, n):
    t.emit(f"if r{a}.__class__ is not _F: _notfn(r{a})")
    t.sync_budget()
    tail = f"_Tail(r{a}, ({''.join(f'{t.reg(r)}, ' for r in range(a + 1, a + 1 + n))}))"
    if t.entry:  # a handler runs its tail call at once
        t.emit(f"_tramp({tail})")
        t.leave()
    else:
        t.emit(f"return {tail}")


def _callb(t, a, ident, c, n):
    if ident == _PRINT_HIST and n:
        _charge_copy(t, f"_size({t.reg(c)})")
    t.emit(f"r{a} = B{ident}({', '.join(t.reg(r) for r in range(c, c + n))})")
    t.wrote(a)


def _return(t, a):
    if t.entry:  # a handler's result is dropped
        t.leave()
        return
    t.sync_budget()
    t.emit(f"return {t.reg(a)}")


def _return0(t):
    if t.entry:
        t.leave()
        return
    t.sync_budget()
    t.emit("return None")


def _evar(t, a, e):
    name = EVENT_VARS[e].name
    t.wrote(a)
    if name in _PLAIN_EVENT_ATTRS:
        t.emit(f"r{a} = E.{name}")
        if name in _STR_EVENT_ATTRS:
            t.strs.add(a)
    elif name == "argstr":
        t.emit(f"r{a} = _EvStr(E.argstr)")
    else:  # arg0..arg9: wrap anything wider than int64 (u64 fields)
        t.emit(f"r{a} = E.arg({int(name[3:])})")
        t.emit(f"if r{a}.__class__ is int and (r{a} > {MAX} or r{a} < {MIN}): r{a} = _wrap(r{a})")


def _efield(t, a, k):
    t.wrote(a)
    t.emit(f"r{a} = _field(E, {t.string_const(k)})")


def _register(t, p, r):
    t.emit(f"_register({int(p)}, r{r})")


# Registers are ``rN``; the only other generated names that contain ``rN``
# are the leaf loops' ``_rN``, set aside first.  (A name like ``xr1`` would
# count as a mention of r1: too many mentions only keep a store.)  A plain
# literal-led pattern: several times faster than \b...\b on long text.
_REGISTER_NAME = re.compile(r"r([0-9]+)")


def register_mentions(text: str) -> list[str]:
    """The numbers of the registers ``text`` names."""
    return _REGISTER_NAME.findall(text.replace("_r", "_."))
_CONSTANT_LINE = re.compile(r"( *)r([0-9]+) = \(?-?[0-9]+\)?\Z")


_TARGETS = re.compile(r"^ *r([0-9]+) = ", re.MULTILINE)


def drop_unread_constants(lines: list[str], first: int) -> None:
    """In one function's lines (from ``first``): a register no line names
    except as the target of an assignment is never read, so storing an
    integer literal into it does nothing; such stores become ``pass``.
    (Each inline handler body in run_handler counts as a function: every
    body sets up the registers it reads.)"""
    text = "\n".join(lines[first:])
    # Every mention of a register, less its mentions as an assignment's
    # target at the start of a line, is a read.
    reads = Counter(register_mentions(text))
    reads.subtract(_TARGETS.findall(text))
    for at in range(first, len(lines)):
        store = _CONSTANT_LINE.match(lines[at])
        if store is not None and reads[store.group(2)] <= 0:
            lines[at] = store.group(1) + "pass"


# How many generated lines back a constant store is still looked at (keeps
# the dead-store check linear in the size of the function).
_DEAD_STORE_WINDOW = 64
_RETURNS = frozenset((op.RETURN, op.RETURN0, op.TAILCALL))

# Builtins whose result is always a number (for int_registers).
_INT_BUILTINS = frozenset(
    b.id for b in BUILTINS
    if b.name in ("len", "gettimeofday_s", "gettimeofday_ms", "gettimeofday_us",
                  "gettimeofday_ns", "num_cpus", "count", "sum", "avg", "min", "max")
)
_PRINT_HIST = next(b.id for b in BUILTINS if b.name == "print_hist")
_INT_RESULT_OPS = frozenset((op.ADD, op.SUB, op.MUL, op.DIV, op.MOD, op.NEG))


def int_registers(f: Function) -> frozenset[int]:
    """Plain non-parameter registers whose every write is an integer.

    Fixpoint over the writes: an integer constant, arithmetic, a FORNUM
    variable, an integer builtin, or a MOVE from such a register."""
    candidates = set(range(f.nparams, f.nregs)) - set(f.boxed)
    written: set[int] = set()  # a register nothing writes stays nil
    moves: list[tuple[int, int]] = []
    for ins in f.code:
        number = ins[0]
        row = op.OPCODES[number]
        for position, kind in enumerate(row.operands, start=1):
            if kind != "w":
                continue
            reg = ins[position]
            written.add(reg)
            if number in _INT_RESULT_OPS or (number == op.FORNUM and position == 1):
                continue
            if number == op.LOADK and f.constants[ins[2]].__class__ is int:
                continue
            if number == op.CALLB and ins[2] in _INT_BUILTINS:
                continue
            if number == op.MOVE:
                moves.append((reg, ins[2]))
                continue
            candidates.discard(reg)
    candidates &= written
    changed = True
    while changed:
        changed = False
        for dst, src in moves:
            if dst in candidates and src not in candidates:
                candidates.discard(dst)
                changed = True
    return frozenset(candidates)


_BY_NAME = {
    "MOVE": _move, "LOADK": _loadk, "LOADNIL": _loadnil, "LOADBOOL": _loadbool,
    "NEWBOX": _newbox, "GETBOX": _getbox, "SETBOX": _setbox,
    "GETUPVAL": _getupval, "SETUPVAL": _setupval, "CLOSURE": _closure,
    "NEWTABLE": _newtable, "GETTABLE": _gettable, "SETTABLE": _settable,
    "ADDTABLE": _addtable, "AGGTABLE": _aggtable,
    "ADD": _arith("+"), "SUB": _arith("-"), "MUL": _arith("*"),
    "DIV": _helper_arith("_div"), "MOD": _helper_arith("_mod"),
    "CONCAT": _concat, "EQ": _eq, "NE": _ne, "LT": _order("<"), "LE": _order("<="),
    "NOT": _not, "NEG": _neg,
    "IF": _if, "ELSE": _else, "END": _end, "LOOP": _loop, "FORNUM": _fornum,
    "FORPAIRS": _forpairs, "BREAK": _break,
    "CALL": _call, "TAILCALL": _tailcall, "CALLB": _callb,
    "RETURN": _return, "RETURN0": _return0,
    "EVAR": _evar, "EFIELD": _efield, "REGISTER": _register,
}
_TEMPLATES = tuple(_BY_NAME[row.name] for row in op.OPCODES)  # KeyError: a new opcode needs a template


# --- one-line forms for very large functions (see compact.py) -----------------


def _c_gettable(t, a, b, c):
    t.wrote(a)
    t.emit(f"r{a} = _gett(r{b}, {t.reg(c)})")


def _c_settable(t, a, b, c):
    t.emit(f"_sett(r{a}, {t.reg(b)}, {t.reg(c)}, {t.table_name(a)})")


def _c_addtable(t, a, b, c):
    t.emit(f"_addt(r{a}, {t.reg(b)}, {t.reg(c)}, {t.table_name(a)})")


def _c_binary(helper: str, result_is_int: bool):
    def template(t, a, b, c):
        t.emit(f"r{a} = {helper}({t.reg(b)}, {t.reg(c)})")
        t.wrote(a)
        if result_is_int:
            t.ints.add(a)
    return template


def _c_neg(t, a, b):
    t.emit(f"r{a} = _neg({t.reg(b)})")
    t.wrote(a)
    t.ints.add(a)


def _c_concat(t, a, b, c):
    t.emit(f"r{a} = _concat(r{b}, r{c}, {t.slim})")
    t.wrote(a)


def _c_call(t, a, b, n):
    args = "".join(f"{t.reg(r)}, " for r in range(b + 1, b + 1 + n))
    t.emit(f"r{a} = _call(r{b}, ({args}), _depth)")
    t.wrote(a)


def _c_tailcall(t, a, n):
    args = "".join(f"{t.reg(r)}, " for r in range(a + 1, a + 1 + n))
    t.emit(f"return _tail(r{a}, ({args}))")


def _c_evar(t, a, e):
    name = EVENT_VARS[e].name
    if name.startswith("arg") and name != "argstr":
        t.wrote(a)
        t.emit(f"r{a} = _i64(E.arg({int(name[3:])}))")
    else:
        _evar(t, a, e)


_COMPACT_BY_NAME = dict(_BY_NAME)
_COMPACT_BY_NAME.update({
    "GETTABLE": _c_gettable, "SETTABLE": _c_settable, "ADDTABLE": _c_addtable,
    "ADD": _c_binary("_add", True), "SUB": _c_binary("_sub", True),
    "MUL": _c_binary("_mul", True), "LT": _c_binary("_lt", False),
    "LE": _c_binary("_le", False), "NEG": _c_neg, "CONCAT": _c_concat,
    "CALL": _c_call, "TAILCALL": _c_tailcall, "EVAR": _c_evar,
})
_COMPACT_TEMPLATES = tuple(_COMPACT_BY_NAME[row.name] for row in op.OPCODES)
