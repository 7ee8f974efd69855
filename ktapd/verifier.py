"""The trust boundary: an untrusted Program becomes a VerifiedProgram or a VerifyError.

``protocol.bytecode.decode`` has already checked *shape* (field types,
sizes); this module checks *meaning*, in one linear pass per function,
against the tables in protocol/bytecode (opcodes, builtins, event
variables) and the format limits in protocol/limits.py:

- every opcode number and operand count, every operand's kind (plain vs
  boxed register, constant, string constant, upvalue, function, builtin and
  its arity, event variable, probe, count with its register run);
- block structure: IF/ELSE/END pairing, ELSE only directly inside an IF,
  BREAK only inside a loop of the same function, every block closed,
  nesting within MAX_BLOCK_DEPTH / MAX_LOOP_DEPTH, and a function that ends
  with RETURN, RETURN0 or TAILCALL at top level;
- closures: the upvalue descriptors of a function must make sense in the
  function that creates it (CLOSURE), every function has at most one
  creator, and no function creates itself or one that encloses it;
- the probe table (TRACE entries have events, timers a positive period).

Every message names the function and, where there is one, the instruction:
``function 2 <name>, instruction 14 (ADD): register 300 is out of range
(function has 12)``.  The checks run on Python values of any type, so a
hand-built Program that decode() would never produce is still refused
cleanly (the property tests rely on that).

The VM (ktapd/vm) accepts only VerifiedProgram and relies on every rule
above; it re-checks nothing.  This module must not import the VM, trio,
ctypes or anything from ktapctl, and must stay linear in the program size.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import limits
from protocol.bytecode import opcodes as op
from protocol.bytecode.builtins import BUILTINS, EVENT_VARS, VARIADIC
from protocol.bytecode.program import (
    PROBE_KINDS,
    PROBE_PROFILE,
    PROBE_TICK,
    PROBE_TRACE,
    UPVAL_FROM_BOX,
    UPVAL_FROM_UPVAL,
    Function,
    Program,
)


class VerifyError(ValueError):
    """The program is not safe to run; the message says where and why."""


@dataclass(frozen=True)
class VerifiedProgram:
    """A program that passed verify().  Only verify() should make one.

    ``parents[i]`` is the index of the function that creates function i
    with CLOSURE (None for main and for functions nothing creates)."""

    program: Program
    admin: bool
    parents: tuple[int | None, ...]


# For the count operand 'n': where its register run starts, relative to
# the register operand just before it.  CALL/TAILCALL pass R[b+1..b+n]
# (R[b] is the callee); CALLB passes R[c..c+n-1].
_RUN_OFFSET = {op.CALL: 1, op.TAILCALL: 1, op.CALLB: 0}
_ENDS_FUNCTION = (op.RETURN, op.RETURN0, op.TAILCALL)

# The VM compiles every instruction to Python source at load; CPython needs
# about 10-20 us per generated line, so a program at the format limits
# (thousands of 65536-instruction functions) would take minutes to load.
# Real scripts are hundreds of instructions; this cap keeps a load to
# seconds.  (A VM load limit, so it lives here rather than in protocol/limits.py.)
MAX_PROGRAM_INSTRUCTIONS = 65536
# The same, by size: every operand and every register a call passes is a
# name in the generated source (a 64-argument call weighs ~70).  Four per
# instruction on average keeps the worst program near 0.3 GB and 2 s to load.
MAX_PROGRAM_WEIGHT = 4 * MAX_PROGRAM_INSTRUCTIONS


def verify(program: Program, *, admin: bool = True) -> VerifiedProgram:
    """Check everything the VM relies on; raise VerifyError at the first problem."""
    if not isinstance(program, Program):
        raise VerifyError("not a Program")
    if program.version != limits.BYTECODE_VERSION:
        raise VerifyError(f"bytecode version {program.version!r} is not supported")
    if not isinstance(program.source_name, str) or len(program.source_name) > limits.MAX_SOURCE_NAME:
        raise VerifyError("source name must be a string of at most "
                          f"{limits.MAX_SOURCE_NAME} characters")
    functions = program.functions
    if not isinstance(functions, tuple) or not functions:
        raise VerifyError("program has no functions (the main chunk is missing)")
    if len(functions) > limits.MAX_FUNCTIONS:
        raise VerifyError(f"program has {len(functions)} functions, at most "
                          f"{limits.MAX_FUNCTIONS} allowed")
    probes = program.probes
    if not isinstance(probes, tuple) or len(probes) > limits.MAX_PROBES:
        raise VerifyError(f"the probe table must be a tuple of at most {limits.MAX_PROBES} entries")
    for index, probe in enumerate(probes):
        _check_probe(index, probe)

    total = 0
    for index, function in enumerate(functions):
        if not isinstance(function, Function):
            raise VerifyError(f"function {index}: not a Function")
        total += len(function.code) if isinstance(function.code, tuple) else 0
    if total > MAX_PROGRAM_INSTRUCTIONS:
        raise VerifyError(f"program has {total} instructions, more than the "
                          f"{MAX_PROGRAM_INSTRUCTIONS} the VM loads")
    main = functions[0]
    if main.nparams != 1:
        raise VerifyError(f"function 0 <{main.name}>: the main chunk must take exactly one "
                          f"parameter (arg), not {main.nparams!r}")
    if main.upvalues:
        raise VerifyError(f"function 0 <{main.name}>: the main chunk cannot have upvalues")

    # creators[f] = (creating function, instruction) of the first CLOSURE of f
    creators: dict[int, tuple[int, int]] = {}
    weight = 0
    for index, function in enumerate(functions):
        weight += _FunctionChecker(program, index, function, admin, creators).run()
    if weight > MAX_PROGRAM_WEIGHT:
        raise VerifyError(f"program is too large for the VM to load (size {weight}, at most "
                          f"{MAX_PROGRAM_WEIGHT}: instructions weigh their operands and the "
                          "registers their calls pass)")

    parents: list[int | None] = [None] * len(functions)
    for child, (creator, _pc) in creators.items():
        parents[child] = creator
    # A function may not create itself or an enclosing function: each
    # creator chain must reach the top without meeting itself.  Chains
    # already known to reach the top are not walked again (linear time).
    reaches_top = [False] * len(functions)
    for start in range(len(functions)):
        path: list[int] = []
        on_path: set[int] = set()
        walk: int | None = start
        while walk is not None and not reaches_top[walk]:
            if walk in on_path:
                creator, pc = creators[walk]
                f = functions[creator]
                raise VerifyError(f"function {creator} <{f.name}>, instruction {pc} (CLOSURE): "
                                  f"function {walk} encloses function {creator} and cannot be "
                                  "created by it")
            path.append(walk)
            on_path.add(walk)
            walk = parents[walk]
        for node in path:
            reaches_top[node] = True
    return VerifiedProgram(program=program, admin=admin, parents=tuple(parents))


def _check_probe(index: int, probe: object) -> None:
    where = f"probe {index}"
    kind = getattr(probe, "kind", None)
    if kind not in PROBE_KINDS:
        raise VerifyError(f"{where}: unknown probe kind {kind!r}")
    events = probe.events
    if not isinstance(events, tuple) or len(events) > limits.MAX_EVENTS_PER_PROBE:
        raise VerifyError(f"{where}: events must be a tuple of at most "
                          f"{limits.MAX_EVENTS_PER_PROBE} specs")
    for spec in events:
        if not isinstance(spec, str) or not spec or len(spec) > limits.MAX_SPEC_LENGTH:
            raise VerifyError(f"{where}: an event spec must be a non-empty string of at most "
                              f"{limits.MAX_SPEC_LENGTH} characters")
    if probe.filter is not None and (not isinstance(probe.filter, str)
                                     or len(probe.filter) > limits.MAX_SPEC_LENGTH):
        raise VerifyError(f"{where}: the filter must be a string of at most "
                          f"{limits.MAX_SPEC_LENGTH} characters")
    # Specs and filters end up in tracefs writes (uprobe_events, filter
    # files) where a newline starts a new command: no control characters
    # (a tab is only a separator there).
    for text in (*events, probe.filter or ""):
        if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in text):
            raise VerifyError(f"{where}: event specs and filters may not contain control "
                              "characters")
    if kind == PROBE_TRACE and not events:
        raise VerifyError(f"{where}: a trace probe needs at least one event")
    if kind != PROBE_TRACE and (events or probe.filter is not None):
        raise VerifyError(f"{where}: a {kind} probe takes no events or filter")
    period = probe.period_ns
    if isinstance(period, bool) or not isinstance(period, int):
        raise VerifyError(f"{where}: the period must be an integer")
    if kind in (PROBE_TICK, PROBE_PROFILE) and not 0 < period <= limits.INT64_MAX:
        raise VerifyError(f"{where}: a {kind} timer needs a positive period, not {period}")
    if not isinstance(probe.line, int):
        raise VerifyError(f"{where}: the line must be an integer")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _FunctionChecker:
    """One linear pass over one function.  Kept as a class only to share
    the error prefix and the per-function facts between small methods."""

    def __init__(self, program: Program, index: int, function: Function, admin: bool,
                 creators: dict[int, tuple[int, int]]):
        self.program = program
        self.index = index
        self.f = function
        self.admin = admin
        self.creators = creators
        self.where = f"function {index} <{function.name}>"

    def fail(self, message: str, pc: int | None = None, name: str = "") -> None:
        if pc is None:
            raise VerifyError(f"{self.where}: {message}")
        raise VerifyError(f"{self.where}, instruction {pc} ({name}): {message}")

    def run(self) -> int:
        """Check the function; return its weight (see MAX_PROGRAM_WEIGHT)."""
        f = self.f
        if not isinstance(f.name, str):
            raise VerifyError(f"function {self.index}: the name must be a string")
        if not _is_int(f.nparams) or not 0 <= f.nparams <= limits.MAX_PARAMS:
            self.fail(f"parameter count {f.nparams!r} is outside 0..{limits.MAX_PARAMS}")
        if not _is_int(f.nregs) or not 0 <= f.nregs <= limits.MAX_REGISTERS:
            self.fail(f"register count {f.nregs!r} is outside 0..{limits.MAX_REGISTERS}")
        if f.nparams > f.nregs:
            self.fail(f"{f.nparams} parameters do not fit in {f.nregs} registers")
        if not isinstance(f.boxed, tuple):
            self.fail("the boxed register list must be a tuple")
        previous = -1
        for reg in f.boxed:
            if not _is_int(reg) or not 0 <= reg < f.nregs:
                self.fail(f"boxed register {reg!r} is out of range (function has {f.nregs})")
            if reg <= previous:
                self.fail("boxed registers must be sorted and distinct")
            previous = reg
        self.boxed = frozenset(f.boxed)
        if not isinstance(f.upvalues, tuple) or len(f.upvalues) > limits.MAX_UPVALUES:
            self.fail(f"at most {limits.MAX_UPVALUES} upvalues allowed")
        for n, up in enumerate(f.upvalues):
            kind = getattr(up, "kind", None)
            if (not _is_int(kind) or kind not in (UPVAL_FROM_BOX, UPVAL_FROM_UPVAL)
                    or not _is_int(up.index) or not isinstance(up.name, str)):
                self.fail(f"upvalue {n} has a malformed descriptor")
        if not isinstance(f.constants, tuple) or len(f.constants) > limits.MAX_CONSTANTS:
            self.fail(f"at most {limits.MAX_CONSTANTS} constants allowed")
        for n, const in enumerate(f.constants):
            if const is None or isinstance(const, bool):
                continue
            if isinstance(const, int):
                if not limits.INT64_MIN <= const <= limits.INT64_MAX:
                    self.fail(f"constant {n} does not fit in 64 bits")
            elif isinstance(const, str):
                if len(const) > limits.MAX_CONSTANT_STRING:
                    self.fail(f"constant {n} is longer than {limits.MAX_CONSTANT_STRING} characters")
            else:
                self.fail(f"constant {n} has type {type(const).__name__}, which is not allowed")
        if not isinstance(f.code, tuple) or len(f.code) > limits.MAX_CODE:
            self.fail(f"the code must be a tuple of at most {limits.MAX_CODE} instructions")
        if not isinstance(f.lines, tuple) or len(f.lines) != len(f.code):
            self.fail("the line table must have one entry per instruction")
        for line in f.lines:
            if not _is_int(line) or line < 0:
                self.fail("line numbers must be non-negative integers")
        if not f.code:
            self.fail("the function has no code (it must end with RETURN)")
        self.check_code()
        return sum(len(ins) + (ins[-1] if ins[0] in _RUN_OFFSET else 0) for ins in f.code)

    def check_code(self) -> None:
        f = self.f
        blocks: list[int] = []  # opcode that opened each enclosing block (ELSE replaces IF)
        loops = 0
        last = -1
        for pc, ins in enumerate(f.code):
            if not isinstance(ins, tuple) or not ins or not all(_is_int(x) for x in ins):
                self.fail("an instruction must be a non-empty tuple of integers", pc, "?")
            number = ins[0]
            if not 0 <= number < len(op.OPCODES):
                self.fail(f"unknown opcode {number}", pc, "?")
            row = op.OPCODES[number]
            if len(ins) != 1 + len(row.operands):
                self.fail(f"takes {len(row.operands)} operands, got {len(ins) - 1}", pc, row.name)
            self.check_operands(pc, row, ins)

            if row.block in (op.OPENS, op.LOOP_OPENS):
                blocks.append(number)
                if len(blocks) > limits.MAX_BLOCK_DEPTH:
                    self.fail(f"blocks nest deeper than {limits.MAX_BLOCK_DEPTH}", pc, row.name)
                if row.block == op.LOOP_OPENS:
                    loops += 1
                    if loops > limits.MAX_LOOP_DEPTH:
                        self.fail(f"loops nest deeper than {limits.MAX_LOOP_DEPTH}", pc, row.name)
            elif row.block == op.MIDDLE:
                if not blocks or blocks[-1] != op.IF:
                    self.fail("ELSE is not directly inside an IF block", pc, row.name)
                blocks[-1] = op.ELSE
            elif row.block == op.CLOSES:
                if not blocks:
                    self.fail("END without an open block", pc, row.name)
                if blocks.pop() in (op.LOOP, op.FORNUM, op.FORPAIRS):
                    loops -= 1
            elif number == op.BREAK and loops == 0:
                self.fail("BREAK is not inside a loop of this function", pc, row.name)
            last = number
        if blocks:
            self.fail(f"{len(blocks)} block(s) are not closed by END at the end of the function")
        if last not in _ENDS_FUNCTION:
            self.fail("the function must end with RETURN, RETURN0 or TAILCALL")

    def check_operands(self, pc: int, row: op.Opcode, ins: tuple[int, ...]) -> None:
        f = self.f
        name = row.name
        for position, kind in enumerate(row.operands, start=1):
            x = ins[position]
            if kind in "rw":
                if kind == "r" and position + 1 < len(ins) and row.operands[position] == "n":
                    continue  # a run's base register: checked with its count below
                self.plain_register(pc, name, x)
            elif kind == "x":
                if x not in self.boxed:
                    self.fail(f"register {x} is not a boxed register", pc, name)
            elif kind in "ks":
                if not 0 <= x < len(f.constants):
                    self.fail(f"constant {x} is out of range (function has {len(f.constants)})",
                              pc, name)
                if kind == "s" and not isinstance(f.constants[x], str):
                    self.fail(f"constant {x} is not a string", pc, name)
            elif kind == "u":
                if not 0 <= x < len(f.upvalues):
                    self.fail(f"upvalue {x} is out of range (function has {len(f.upvalues)})",
                              pc, name)
            elif kind == "f":
                self.closure_target(pc, name, x)
            elif kind == "b":
                self.builtin(pc, name, ins)
            elif kind == "e":
                if not 0 <= x < len(EVENT_VARS):
                    self.fail(f"unknown event variable {x}", pc, name)
            elif kind == "p":
                if not 0 <= x < len(self.program.probes):
                    self.fail(f"probe {x} is out of range (program has "
                              f"{len(self.program.probes)})", pc, name)
            elif kind == "n":
                if not 0 <= x <= limits.MAX_CALL_ARGS:
                    self.fail(f"count {x} is outside 0..{limits.MAX_CALL_ARGS}", pc, name)
                base = ins[position - 1]
                offset = _RUN_OFFSET[ins[0]]
                if offset:  # the callee register itself
                    self.plain_register(pc, name, base)
                self.register_run(pc, name, base + offset, x)
            elif kind == "i":
                if x not in (0, 1):
                    self.fail(f"immediate {x} must be 0 or 1", pc, name)
            else:  # pragma: no cover - a new operand kind needs a rule here
                self.fail(f"operand kind {kind!r} has no verifier rule", pc, name)

    def plain_register(self, pc: int, name: str, x: int) -> None:
        if not 0 <= x < self.f.nregs:
            self.fail(f"register {x} is out of range (function has {self.f.nregs})", pc, name)
        if x in self.boxed:
            self.fail(f"register {x} is boxed and may only be used by NEWBOX, GETBOX, SETBOX "
                      "and CLOSURE", pc, name)

    def register_run(self, pc: int, name: str, start: int, count: int) -> None:
        if count == 0:
            # An empty run names no register; codegen may point it just past
            # the last one.
            if not 0 <= start <= self.f.nregs:
                self.fail(f"register {start} is out of range (function has {self.f.nregs})",
                          pc, name)
            return
        for reg in range(start, start + count):
            self.plain_register(pc, name, reg)

    def builtin(self, pc: int, name: str, ins: tuple[int, ...]) -> None:
        _, _a, ident, _c, count = ins
        if not 0 <= ident < len(BUILTINS):
            self.fail(f"unknown builtin {ident}", pc, name)
        b = BUILTINS[ident]
        hi = limits.MAX_CALL_ARGS if b.max_args == VARIADIC else b.max_args
        if not b.min_args <= count <= hi:
            self.fail(f"builtin '{b.name}' takes {b.min_args}..{hi} arguments, not {count}",
                      pc, name)
        if b.admin_only and not self.admin:
            self.fail(f"builtin '{b.name}' is for administrators only", pc, name)

    def closure_target(self, pc: int, name: str, child: int) -> None:
        functions = self.program.functions
        if not 0 < child < len(functions):
            self.fail(f"function {child} is out of range (program has {len(functions)}; "
                      "function 0 is the main chunk)", pc, name)
        if child == self.index:
            self.fail(f"function {child} cannot create itself", pc, name)
        previous = self.creators.get(child)
        if previous is not None and previous[0] != self.index:
            self.fail(f"function {child} is already created by function {previous[0]}; "
                      "a function has one creator", pc, name)
        if previous is None:
            self.creators[child] = (self.index, pc)
        target = functions[child]
        if not isinstance(target.upvalues, tuple):
            self.fail(f"function {child} has a malformed upvalue list", pc, name)
        for n, up in enumerate(target.upvalues):
            kind = getattr(up, "kind", None)
            index = getattr(up, "index", None)
            if kind == UPVAL_FROM_BOX:
                if index not in self.boxed:
                    self.fail(f"upvalue {n} of function {child} names register {index!r}, "
                              "which is not a boxed register here", pc, name)
            elif kind == UPVAL_FROM_UPVAL:
                if not _is_int(index) or not 0 <= index < len(self.f.upvalues):
                    self.fail(f"upvalue {n} of function {child} names upvalue {index!r}, but "
                              f"this function has {len(self.f.upvalues)}", pc, name)
            else:
                self.fail(f"upvalue {n} of function {child} has unknown kind {kind!r}", pc, name)
