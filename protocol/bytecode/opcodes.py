"""The ktap instruction set: one table that every other part reads.

Codegen (ktapctl/lang/codegen.py) emits these instructions, the
disassembler prints them, the verifier (ktapd/verifier.py) checks them and
the VM (ktapd/vm/) translates them to Python.  Nothing else may define an
opcode, an operand kind or an operand count: add a row here and every
consumer sees it.

Theory of operation
-------------------
Register machine with *structured* control flow (DESIGN.md decision 2).
There are no jumps: ``IF``/``ELSE``/``END``, ``LOOP``/``END``,
``FORNUM``/``END`` and ``FORPAIRS``/``END`` nest like brackets, ``BREAK``
leaves the innermost loop.  That makes one linear pass enough to verify a
function, and lets the VM translate each block to the matching Python
statement.

An instruction is a tuple ``(opcode_number, operand, ...)`` whose length is
fixed by its row.  Operand kinds:

====  ===========================================================
kind  meaning (what the verifier checks)
====  ===========================================================
r     register read: ``0 <= x < nregs``, not a boxed register
w     register write: same check as ``r``
x     boxed register (holds a cell for a captured local): ``x in boxed``
k     constant index: ``0 <= x < len(constants)``
s     constant index whose constant is a string
u     upvalue index: ``0 <= x < len(upvalues)``
f     function index: ``0 < x < len(functions)``, and not an enclosing one
b     builtin id (protocol/bytecode/builtins.py BUILTINS)
e     event-variable id (builtins.py EVENT_VARS)
p     probe index into ``Program.probes``
n     a count ``0 <= x <= MAX_CALL_ARGS``; with the preceding
      register operand it names a run of consecutive registers
i     immediate 0 or 1
====  ===========================================================

Calls pass their arguments in consecutive registers:
``CALL a b n`` calls ``R[b]`` with ``R[b+1] .. R[b+n]``;
``CALLB a id c n`` calls builtin ``id`` with ``R[c] .. R[c+n-1]``.

Captured locals live in *boxed* registers (listed in ``Function.boxed``):
those hold a cell, never a plain value, and only ``NEWBOX``, ``GETBOX``,
``SETBOX`` and ``CLOSURE`` (through the child's upvalue descriptors) may
touch them.  ``NEWBOX`` runs each time a declaration runs, so a closure
made inside a loop captures that iteration's variable.

This module must not import anything outside the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass

OPERAND_KINDS = {
    "r": "register read",
    "w": "register write",
    "x": "boxed register",
    "k": "constant",
    "s": "string constant",
    "u": "upvalue",
    "f": "function",
    "b": "builtin",
    "e": "event variable",
    "p": "probe",
    "n": "count",
    "i": "immediate 0/1",
}

# How an opcode affects block nesting (used by verifier, VM, disassembler).
OPENS = "opens"  # starts a block that a later END closes
LOOP_OPENS = "loop"  # starts a loop block (BREAK may leave it)
MIDDLE = "middle"  # ELSE: closes the IF part, opens the else part
CLOSES = "closes"  # END
FLAT = ""


@dataclass(frozen=True)
class Opcode:
    number: int
    name: str
    operands: str  # one letter per operand, kinds above
    block: str  # OPENS / LOOP_OPENS / MIDDLE / CLOSES / FLAT
    doc: str


_ROWS: list[tuple[str, str, str, str]] = [
    # name, operands, block effect, doc
    ("MOVE", "wr", FLAT, "R[a] = R[b]"),
    ("LOADK", "wk", FLAT, "R[a] = K[b]"),
    ("LOADNIL", "w", FLAT, "R[a] = nil"),
    ("LOADBOOL", "wi", FLAT, "R[a] = (b == 1)"),
    ("NEWBOX", "x", FLAT, "boxed R[a] = a fresh cell holding nil"),
    ("GETBOX", "wx", FLAT, "R[a] = value in the cell of boxed R[b]"),
    ("SETBOX", "xr", FLAT, "value in the cell of boxed R[a] = R[b]"),
    ("GETUPVAL", "wu", FLAT, "R[a] = value in upvalue cell U[b]"),
    ("SETUPVAL", "ur", FLAT, "value in upvalue cell U[a] = R[b]"),
    ("CLOSURE", "wf", FLAT,
     "R[a] = a closure of function F[b]; its upvalue descriptors say which "
     "boxed registers and upvalues of the current function it captures"),
    ("NEWTABLE", "w", FLAT, "R[a] = {} (empty table)"),
    ("GETTABLE", "wrr", FLAT, "R[a] = R[b][R[c]] (nil when missing)"),
    ("SETTABLE", "rrr", FLAT, "R[a][R[b]] = R[c] (nil value removes the key)"),
    ("ADDTABLE", "rrr", FLAT, "R[a][R[b]] += R[c] (a missing entry counts as 0)"),
    ("AGGTABLE", "rrr", FLAT, "R[a][R[b]] <<< R[c] (add a sample to the aggregate)"),
    ("ADD", "wrr", FLAT, "R[a] = R[b] + R[c] (int64, wraps)"),
    ("SUB", "wrr", FLAT, "R[a] = R[b] - R[c] (int64, wraps)"),
    ("MUL", "wrr", FLAT, "R[a] = R[b] * R[c] (int64, wraps)"),
    ("DIV", "wrr", FLAT, "R[a] = R[b] / R[c] (truncates toward zero; 0 divisor is an error)"),
    ("MOD", "wrr", FLAT, "R[a] = R[b] % R[c] (C remainder; 0 divisor is an error)"),
    ("CONCAT", "wrr", FLAT, "R[a] = R[b] .. R[c] (strings only; string limit applies)"),
    ("EQ", "wrr", FLAT, "R[a] = R[b] == R[c] (same type and value)"),
    ("NE", "wrr", FLAT, "R[a] = R[b] != R[c]"),
    ("LT", "wrr", FLAT, "R[a] = R[b] < R[c] (numbers only)"),
    ("LE", "wrr", FLAT, "R[a] = R[b] <= R[c] (numbers only)"),
    ("NOT", "wr", FLAT, "R[a] = not R[b] (true when R[b] is nil or false)"),
    ("NEG", "wr", FLAT, "R[a] = -R[b] (int64, wraps)"),
    ("IF", "r", OPENS, "run the block when R[a] is true (not nil/false)"),
    ("ELSE", "", MIDDLE, "start of the block run when the IF test was false"),
    ("END", "", CLOSES, "close the innermost IF/ELSE/LOOP/FORNUM/FORPAIRS"),
    ("LOOP", "", LOOP_OPENS, "repeat the block until BREAK or RETURN; each pass is one step"),
    ("FORNUM", "wrrr", LOOP_OPENS,
     "for R[a] = R[b], R[c], R[d] (inclusive, step R[d] != 0); operands are "
     "read once; each pass is one step"),
    ("FORPAIRS", "wwr", LOOP_OPENS,
     "for R[a], R[b] in pairs(R[c]): key and value of each entry of table "
     "R[c] (a snapshot); each pass is one step"),
    ("BREAK", "", FLAT, "leave the innermost loop"),
    ("CALL", "wrn", FLAT, "R[a] = R[b](R[b+1] .. R[b+n]); one step; depth-limited"),
    ("TAILCALL", "rn", FLAT, "return R[a](R[a+1] .. R[a+n]) as a proper tail call; one step"),
    ("CALLB", "wbrn", FLAT, "R[a] = builtin b(R[c] .. R[c+n-1])"),
    ("RETURN", "r", FLAT, "return R[a]"),
    ("RETURN0", "", FLAT, "return nil"),
    ("EVAR", "we", FLAT, "R[a] = event variable b (argstr, pid, arg0, ...)"),
    ("EFIELD", "ws", FLAT, "R[a] = field named K[b] of the current event (args.NAME)"),
    ("REGISTER", "pr", FLAT,
     "make closure R[b] the handler of probe table entry a (main chunk only, at run time)"),
]

OPCODES: tuple[Opcode, ...] = tuple(
    Opcode(number, name, operands, block, doc)
    for number, (name, operands, block, doc) in enumerate(_ROWS)
)
BY_NAME: dict[str, Opcode] = {op.name: op for op in OPCODES}

# Module-level constants so codegen/VM can write ``op.ADD`` without lookups.
MOVE = BY_NAME["MOVE"].number
LOADK = BY_NAME["LOADK"].number
LOADNIL = BY_NAME["LOADNIL"].number
LOADBOOL = BY_NAME["LOADBOOL"].number
NEWBOX = BY_NAME["NEWBOX"].number
GETBOX = BY_NAME["GETBOX"].number
SETBOX = BY_NAME["SETBOX"].number
GETUPVAL = BY_NAME["GETUPVAL"].number
SETUPVAL = BY_NAME["SETUPVAL"].number
CLOSURE = BY_NAME["CLOSURE"].number
NEWTABLE = BY_NAME["NEWTABLE"].number
GETTABLE = BY_NAME["GETTABLE"].number
SETTABLE = BY_NAME["SETTABLE"].number
ADDTABLE = BY_NAME["ADDTABLE"].number
AGGTABLE = BY_NAME["AGGTABLE"].number
ADD = BY_NAME["ADD"].number
SUB = BY_NAME["SUB"].number
MUL = BY_NAME["MUL"].number
DIV = BY_NAME["DIV"].number
MOD = BY_NAME["MOD"].number
CONCAT = BY_NAME["CONCAT"].number
EQ = BY_NAME["EQ"].number
NE = BY_NAME["NE"].number
LT = BY_NAME["LT"].number
LE = BY_NAME["LE"].number
NOT = BY_NAME["NOT"].number
NEG = BY_NAME["NEG"].number
IF = BY_NAME["IF"].number
ELSE = BY_NAME["ELSE"].number
END = BY_NAME["END"].number
LOOP = BY_NAME["LOOP"].number
FORNUM = BY_NAME["FORNUM"].number
FORPAIRS = BY_NAME["FORPAIRS"].number
BREAK = BY_NAME["BREAK"].number
CALL = BY_NAME["CALL"].number
TAILCALL = BY_NAME["TAILCALL"].number
CALLB = BY_NAME["CALLB"].number
RETURN = BY_NAME["RETURN"].number
RETURN0 = BY_NAME["RETURN0"].number
EVAR = BY_NAME["EVAR"].number
EFIELD = BY_NAME["EFIELD"].number
REGISTER = BY_NAME["REGISTER"].number

assert len(BY_NAME) == len(OPCODES), "duplicate opcode name"
