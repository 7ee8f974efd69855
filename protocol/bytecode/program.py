"""The bytecode container: what a compiled script is, as plain data.

A ``Program`` is what ``ktapctl`` produces and ``ktapd`` accepts: functions
(code, constants, upvalue descriptors, line table, register count), the
probe table (event specs as data) and the source name.  These are frozen
dataclasses with no behaviour; encoding.py turns them into bytes and back,
opcodes.py says what the code means, the verifier decides if it is safe.

This module must not import anything outside the standard library and the
protocol package.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.limits import BYTECODE_VERSION

# A constant is one of these Python types; strings are str (script strings
# may hold any code point 0..255 from \xHH escapes, and UTF-8 text).
Constant = None | bool | int | str

# Upvalue descriptor kinds: where a closure's upvalue comes from in the
# function executing the CLOSURE instruction.
UPVAL_FROM_BOX = 0  # a boxed register of the creating function
UPVAL_FROM_UPVAL = 1  # an upvalue of the creating function

# Probe table kinds.  TRACE entries carry event specs (tracepoint, probe:,
# sdt:, ftrace: ...), classified by the daemon; timers carry a period.
PROBE_TRACE = "trace"
PROBE_TICK = "tick"
PROBE_PROFILE = "profile"
PROBE_END = "trace_end"
PROBE_KINDS = (PROBE_TRACE, PROBE_TICK, PROBE_PROFILE, PROBE_END)


@dataclass(frozen=True)
class Upvalue:
    kind: int  # UPVAL_FROM_BOX or UPVAL_FROM_UPVAL
    index: int  # boxed register number, or upvalue number, in the creator
    name: str = ""  # for the disassembler and error messages


@dataclass(frozen=True)
class Function:
    name: str  # "main", the declared name, or "<anonymous>" / "<trace ...>"
    nparams: int  # parameters arrive in registers 0..nparams-1
    nregs: int  # registers used, parameters included
    boxed: tuple[int, ...]  # registers that hold cells (captured locals), sorted
    upvalues: tuple[Upvalue, ...]
    constants: tuple[Constant, ...]
    code: tuple[tuple[int, ...], ...]  # (opcode, operands...)
    lines: tuple[int, ...]  # source line of each instruction, same length as code
    line: int = 0  # line where the function is defined


@dataclass(frozen=True)
class Probe:
    kind: str  # one of PROBE_KINDS
    events: tuple[str, ...] = ()  # TRACE: event specs as written ("syscalls:sys_enter_*")
    filter: str | None = None  # TRACE: kernel filter text between the slashes
    period_ns: int = 0  # TICK/PROFILE: the interval
    line: int = 0  # source line of the statement


@dataclass(frozen=True)
class Program:
    functions: tuple[Function, ...]  # functions[0] is the main chunk, nparams == 1 (`arg`)
    probes: tuple[Probe, ...]
    source_name: str  # "script.kp" or "(command line)"
    version: int = BYTECODE_VERSION
