"""Program <-> bytes (msgpack).  decode() is the first gate for untrusted input.

``decode`` is total and bounded: for any byte string it returns a Program
whose every field has the right Python type and stays within the format
limits, or raises ``DecodeError``.  It checks *shape* only; whether the
code makes sense (indices, operand kinds, nesting) is the verifier's job.

Wire layout (msgpack), documented in docs/bytecode.md::

    {"magic": "ktap-bytecode", "version": 1, "source": str,
     "functions": [[name, nparams, nregs, [boxed...], [[kind, index, name]...],
                    [constants...], [[op, operands...]...], [lines...], line], ...],
     "probes": [[kind, [events...], filter|nil, period_ns, line], ...]}

This module must not do I/O or import anything outside the standard library,
msgpack and the protocol package.
"""

from __future__ import annotations

import msgpack

from protocol import limits
from protocol.bytecode.program import PROBE_KINDS, Function, Probe, Program, Upvalue

MAGIC = "ktap-bytecode"


class DecodeError(ValueError):
    """The bytes are not a well-formed ktap program; the message says where."""


def encode(program: Program) -> bytes:
    doc = {
        "magic": MAGIC,
        "version": program.version,
        "source": program.source_name,
        "functions": [
            [
                f.name,
                f.nparams,
                f.nregs,
                list(f.boxed),
                [[u.kind, u.index, u.name] for u in f.upvalues],
                list(f.constants),
                [list(ins) for ins in f.code],
                list(f.lines),
                f.line,
            ]
            for f in program.functions
        ],
        "probes": [[p.kind, list(p.events), p.filter, p.period_ns, p.line] for p in program.probes],
    }
    return msgpack.packb(doc, use_bin_type=True)


def decode(data: bytes) -> Program:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("program must be bytes")
    if len(data) > limits.MAX_PROGRAM_BYTES:
        raise DecodeError(f"program is {len(data)} bytes, more than {limits.MAX_PROGRAM_BYTES}")
    try:
        doc = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except Exception as exc:  # msgpack raises many types; one error leaves here
        raise DecodeError(f"not a msgpack document: {str(exc) or type(exc).__name__}") from None

    doc = _expect(doc, dict, "program")
    if doc.get("magic") != MAGIC:
        raise DecodeError("not a ktap program (bad magic)")
    version = doc.get("version")
    if version != limits.BYTECODE_VERSION:
        raise DecodeError(
            f"bytecode version {version!r} is not supported (expected {limits.BYTECODE_VERSION})"
        )
    source = _string(doc.get("source"), "source name", limits.MAX_SOURCE_NAME)
    functions = _list(doc.get("functions"), "functions", limits.MAX_FUNCTIONS)
    if not functions:
        raise DecodeError("program has no functions (the main chunk is missing)")
    probes = _list(doc.get("probes"), "probes", limits.MAX_PROBES)
    return Program(
        functions=tuple(_function(f, i) for i, f in enumerate(functions)),
        probes=tuple(_probe(p, i) for i, p in enumerate(probes)),
        source_name=source,
        version=version,
    )


def _function(raw: object, index: int) -> Function:
    where = f"function {index}"
    fields = _list(raw, where, 9)
    if len(fields) != 9:
        raise DecodeError(f"{where}: expected 9 fields, got {len(fields)}")
    name, nparams, nregs, boxed, upvals, consts, code, lines, line = fields
    name = _string(name, f"{where} name", 256)
    nparams = _int(nparams, f"{where} nparams", 0, limits.MAX_PARAMS)
    nregs = _int(nregs, f"{where} nregs", 0, limits.MAX_REGISTERS)
    boxed = tuple(
        _int(b, f"{where} boxed register", 0, limits.MAX_REGISTERS)
        for b in _list(boxed, f"{where} boxed", limits.MAX_REGISTERS)
    )
    upvalues = []
    for u in _list(upvals, f"{where} upvalues", limits.MAX_UPVALUES):
        u = _list(u, f"{where} upvalue", 3)
        if len(u) != 3:
            raise DecodeError(f"{where}: an upvalue descriptor needs 3 fields")
        upvalues.append(
            Upvalue(
                _int(u[0], f"{where} upvalue kind", 0, 1),
                _int(u[1], f"{where} upvalue index", 0, limits.MAX_REGISTERS),
                _string(u[2], f"{where} upvalue name", 256),
            )
        )
    constants = tuple(
        _constant(c, where) for c in _list(consts, f"{where} constants", limits.MAX_CONSTANTS)
    )
    instructions = []
    for ins in _list(code, f"{where} code", limits.MAX_CODE):
        ins = _list(ins, f"{where} instruction", 8)
        if not ins:
            raise DecodeError(f"{where}: empty instruction")
        instructions.append(tuple(_int(x, f"{where} operand", 0, 0xFFFFFFFF) for x in ins))
    line_table = tuple(
        _int(n, f"{where} line", 0, 0xFFFFFFFF) for n in _list(lines, f"{where} lines", limits.MAX_CODE)
    )
    if len(line_table) != len(instructions):
        raise DecodeError(f"{where}: line table has {len(line_table)} entries for {len(instructions)} instructions")
    return Function(
        name=name,
        nparams=nparams,
        nregs=nregs,
        boxed=boxed,
        upvalues=tuple(upvalues),
        constants=constants,
        code=tuple(instructions),
        lines=line_table,
        line=_int(line, f"{where} line", 0, 0xFFFFFFFF),
    )


def _probe(raw: object, index: int) -> Probe:
    where = f"probe {index}"
    fields = _list(raw, where, 5)
    if len(fields) != 5:
        raise DecodeError(f"{where}: expected 5 fields, got {len(fields)}")
    kind, events, filt, period, line = fields
    if kind not in PROBE_KINDS:
        raise DecodeError(f"{where}: unknown probe kind {kind!r}")
    events = tuple(
        _string(e, f"{where} event", limits.MAX_SPEC_LENGTH)
        for e in _list(events, f"{where} events", limits.MAX_EVENTS_PER_PROBE)
    )
    if filt is not None:
        filt = _string(filt, f"{where} filter", limits.MAX_SPEC_LENGTH)
    return Probe(
        kind=kind,
        events=events,
        filter=filt,
        period_ns=_int(period, f"{where} period", 0, limits.INT64_MAX),
        line=_int(line, f"{where} line", 0, 0xFFFFFFFF),
    )


def _constant(value: object, where: str):
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not limits.INT64_MIN <= value <= limits.INT64_MAX:
            raise DecodeError(f"{where}: integer constant {value} does not fit in 64 bits")
        return value
    if isinstance(value, str):
        if len(value) > limits.MAX_CONSTANT_STRING:
            raise DecodeError(f"{where}: string constant longer than {limits.MAX_CONSTANT_STRING}")
        return value
    raise DecodeError(f"{where}: constant of type {type(value).__name__} is not allowed")


def _expect(value: object, kind: type, what: str):
    if not isinstance(value, kind):
        raise DecodeError(f"{what}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _list(value: object, what: str, max_len: int) -> list:
    value = _expect(value, list, what)
    if len(value) > max_len:
        raise DecodeError(f"{what}: {len(value)} items, at most {max_len} allowed")
    return value


def _string(value: object, what: str, max_len: int) -> str:
    value = _expect(value, str, what)
    if len(value) > max_len:
        raise DecodeError(f"{what}: longer than {max_len} characters")
    return value


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"{what}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise DecodeError(f"{what}: {value} is outside {lo}..{hi}")
    return value
