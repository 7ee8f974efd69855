"""A tiny assembler for hand-written test programs (tests/vm and tests/verifier).

Instructions are tuples of an opcode name and operands.  Conveniences:
``K(value)`` as an operand interns a constant; a builtin operand may be
its name (``"print"``) and an event-variable operand its name
(``"execname"``).  ``nregs`` defaults to one more than the highest
register mentioned.  Lines default to pc + 1.

    main = fn([("LOADK", 0, K("hi")), ("CALLB", 1, "print", 0, 1), ("RETURN0",)], nparams=1)
    program = prog(main)
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.bytecode import opcodes as op
from protocol.bytecode.builtins import BUILTIN_BY_NAME, EVENT_VAR_BY_NAME
from protocol.bytecode.program import Function, Probe, Program, Upvalue


@dataclass(frozen=True)
class K:
    value: object


def fn(code, *, nparams=0, nregs=None, boxed=(), upvalues=(), name="f", lines=None,
       constants=()) -> Function:
    consts = list(constants)
    out = []
    highest = nparams - 1
    for ins in code:
        if isinstance(ins[0], int):  # raw instruction, kept as written (bad-program tests)
            out.append(tuple(ins))
            continue
        row = op.BY_NAME[ins[0]]
        operands = []
        kinds = row.operands.ljust(len(ins) - 1, "?")  # extra operands are kept, unchecked
        for kind, x in zip(kinds, ins[1:], strict=False):
            if isinstance(x, K):
                for i, c in enumerate(consts):
                    if type(c) is type(x.value) and c == x.value:
                        x = i
                        break
                else:
                    consts.append(x.value)
                    x = len(consts) - 1
            elif kind == "b" and isinstance(x, str):
                x = BUILTIN_BY_NAME[x].id
            elif kind == "e" and isinstance(x, str):
                x = EVENT_VAR_BY_NAME[x].id
            if kind in "rwx":
                highest = max(highest, x)
            operands.append(x)
        out.append((row.number, *operands))
    for b in boxed:
        highest = max(highest, b)
    ups = tuple(u if isinstance(u, Upvalue) else Upvalue(*u) for u in upvalues)
    return Function(
        name=name,
        nparams=nparams,
        nregs=highest + 1 if nregs is None else nregs,
        boxed=tuple(boxed),
        upvalues=ups,
        constants=tuple(consts),
        code=tuple(out),
        lines=tuple(lines) if lines is not None else tuple(range(1, len(out) + 1)),
    )


def prog(main: Function, *functions: Function, probes=(), source="test.kp") -> Program:
    return Program(functions=(main, *functions), probes=tuple(probes), source_name=source)


def main_fn(code, **kw) -> Function:
    kw.setdefault("nparams", 1)
    kw.setdefault("name", "main")
    return fn(code, **kw)


TRACE = Probe(kind="trace", events=("syscalls:sys_enter_openat",))
TICK = Probe(kind="tick", period_ns=1_000_000_000)
END = Probe(kind="trace_end")
