"""Table-driven disassembler: Program -> readable text (``ktapctl -b``).

Reads only opcodes.OPCODES and builtins tables, so a new opcode prints as
soon as it has a row.  It must cope with programs that have not been
verified (it is also used to show rejected programs): unknown opcodes and
out-of-range operands print as such instead of raising.
"""

from __future__ import annotations

from protocol.bytecode import opcodes
from protocol.bytecode.builtins import BUILTINS, EVENT_VARS
from protocol.bytecode.program import UPVAL_FROM_BOX, Function, Program


def disassemble(program: Program) -> str:
    out = [f"; ktap bytecode v{program.version}, source {program.source_name!r}"]
    for index, probe in enumerate(program.probes):
        what = ", ".join(probe.events) if probe.events else f"{probe.period_ns} ns"
        filt = f" /{probe.filter}/" if probe.filter else ""
        out.append(f"; probe {index}: {probe.kind} {what}{filt} (line {probe.line})")
    for index, function in enumerate(program.functions):
        out.append("")
        out.extend(disassemble_function(function, index))
    return "\n".join(out) + "\n"


def disassemble_function(function: Function, index: int) -> list[str]:
    f = function
    lines = [
        f"function {index} <{f.name}> line {f.line}: params {f.nparams}, registers {f.nregs}, "
        f"boxed {list(f.boxed)}, constants {len(f.constants)}"
    ]
    for n, up in enumerate(f.upvalues):
        src = "box r" if up.kind == UPVAL_FROM_BOX else "upvalue u"
        lines.append(f"  upvalue u{n} {up.name or '?'} <- {src}{up.index}")
    depth = 0
    for pc, ins in enumerate(f.code):
        line = f.lines[pc] if pc < len(f.lines) else 0
        row = opcodes.OPCODES[ins[0]] if 0 <= ins[0] < len(opcodes.OPCODES) else None
        if row is None:
            lines.append(f"  {pc:4d} [{line:4d}] {'  ' * depth}??? {ins}")
            continue
        if row.block in (opcodes.CLOSES, opcodes.MIDDLE):
            depth = max(depth - 1, 0)
        text = _operands(row, ins[1:], f)
        lines.append(f"  {pc:4d} [{line:4d}] {'  ' * depth}{row.name:<9} {text}".rstrip())
        if row.block in (opcodes.OPENS, opcodes.LOOP_OPENS, opcodes.MIDDLE):
            depth += 1
    return lines


def _operands(row: opcodes.Opcode, args: tuple[int, ...], f: Function) -> str:
    parts = []
    for kind, value in zip(row.operands, args, strict=False):
        if kind in "rw":
            parts.append(f"r{value}")
        elif kind == "x":
            parts.append(f"box{value}")
        elif kind in "ks":
            const = f.constants[value] if value < len(f.constants) else "?"
            parts.append(f"k{value}({const!r})")
        elif kind == "u":
            name = f.upvalues[value].name if value < len(f.upvalues) else "?"
            parts.append(f"u{value}({name})")
        elif kind == "f":
            parts.append(f"f{value}")
        elif kind == "b":
            parts.append(BUILTINS[value].name if value < len(BUILTINS) else f"builtin?{value}")
        elif kind == "e":
            parts.append(EVENT_VARS[value].name if value < len(EVENT_VARS) else f"evar?{value}")
        elif kind == "p":
            parts.append(f"probe{value}")
        else:
            parts.append(str(value))
    if len(args) != len(row.operands):
        parts.append(f"<{len(args)} operands, expected {len(row.operands)}>")
    return " ".join(parts)
