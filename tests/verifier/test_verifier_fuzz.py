"""Property tests of the trust boundary (hypothesis).

1. Everything the compiler emits verifies (all language-test scripts and samples).
2. Mutated programs (operands, opcodes, counts, registers, upvalue descriptors,
   instruction insertion/removal) and garbage bytes only ever give a
   VerifiedProgram, a VerifyError or a DecodeError, and quickly.
3. Whatever verifies also runs (mutated programs, and programs valid by
   construction that reach every template, empty blocks and deep nesting): Machine construction, the main chunk, every
   registered handler (with and without an event) and trace_end end normally
   or with an Error record, never with an escaping Python exception and never
   with an "internal error".
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ktap_asm import END, TICK, TRACE, K, fn, main_fn, prog

from ktapd.verifier import VerifiedProgram, VerifyError, verify
from ktapd.vm import FakeEvent, Machine, compact
from protocol.bytecode import DecodeError, decode, encode
from protocol.bytecode.program import Upvalue
from protocol.limits import RuntimeLimits
from protocol.records import Error

ROOT = Path(__file__).resolve().parents[2]
SMALL = RuntimeLimits(main_steps=5_000, handler_steps=1_000, call_depth=30, table_entries=50,
                      string_bytes=64)


def hand_seeds():
    """Valid programs touching every opcode."""
    counter = fn([
        ("GETUPVAL", 0, 0), ("EVAR", 1, "execname"), ("LOADK", 2, K(1)), ("ADDTABLE", 0, 1, 2),
        ("EVAR", 3, "arg1"), ("AGGTABLE", 0, 3, 3), ("EFIELD", 4, K("dfd")),
        ("CALLB", 5, "print", 3, 2), ("RETURN0",),
    ], upvalues=[(0, 1, "s")], name="handler")
    helper = fn([
        ("LOADK", 1, K(0)), ("EQ", 2, 0, 1), ("IF", 2), ("RETURN", 1), ("ELSE",),
        ("LOADK", 3, K(1)), ("SUB", 4, 0, 3), ("GETUPVAL", 5, 0), ("MOVE", 6, 4),
        ("TAILCALL", 5, 1), ("END",), ("RETURN0",),
    ], nparams=1, upvalues=[(0, 2, "countdown")], name="countdown")
    ender = fn([("GETUPVAL", 0, 0), ("LOADK", 1, K(5)), ("CALLB", 2, "print_hist", 0, 2),
                ("CALLB", 2, "hist", 3, 1), ("RETURN0",)], upvalues=[(0, 1, "s")], name="end")
    main = main_fn([
        ("NEWBOX", 1), ("NEWTABLE", 3), ("SETBOX", 1, 3),
        ("NEWBOX", 2), ("CLOSURE", 3, 2), ("SETBOX", 2, 3),
        ("CLOSURE", 4, 1), ("REGISTER", 0, 4), ("REGISTER", 1, 4),
        ("CLOSURE", 4, 3), ("REGISTER", 2, 4),
        ("LOADK", 5, K(1)), ("LOADK", 6, K(20)), ("LOADK", 7, K(3)),
        ("FORNUM", 8, 5, 6, 7), ("MUL", 9, 8, 8), ("DIV", 10, 9, 7), ("MOD", 10, 9, 7),
        ("NEG", 10, 10), ("LT", 11, 10, 5), ("LE", 11, 10, 5), ("NOT", 11, 11), ("NE", 11, 9, 8),
        ("IF", 11), ("BREAK",), ("END",), ("END",),
        ("LOADK", 12, K("a")), ("LOADK", 13, K("b")), ("CONCAT", 14, 12, 13),
        ("NEWTABLE", 15), ("SETTABLE", 15, 14, 5), ("GETTABLE", 16, 15, 14),
        ("FORPAIRS", 17, 18, 15), ("LOADNIL", 19), ("LOADBOOL", 19, 1), ("END",),
        ("LOOP",), ("ADD", 5, 5, 5), ("LT", 11, 6, 5), ("IF", 11), ("BREAK",), ("END",), ("END",),
        ("GETBOX", 20, 2), ("LOADK", 21, K(10)), ("CALL", 20, 20, 1),
        ("LOADK", 22, K("%d %s\n")), ("MOVE", 23, 20), ("MOVE", 24, 14),
        ("CALLB", 22, "printf", 22, 3), ("EVAR", 25, "pid"),
        ("RETURN0",),
    ], boxed=(1, 2))
    yield prog(main, counter, helper, ender, probes=[TRACE, TICK, END])
    yield prog(main_fn([("LOADK", 1, K(1)), ("RETURN", 1)]))


def compiled_seeds():
    try:
        from ktapctl.lang import CompileError, compile_source
    except ImportError:
        return
    paths = sorted((ROOT / "tests" / "lang" / "scripts").rglob("*.kp"))
    paths += sorted((ROOT / "samples").glob("*.kp"))
    for path in paths:
        try:
            yield path, compile_source(path.read_text(), str(path.name))
        except CompileError:
            continue  # scripts that test compile errors


SEEDS = list(hand_seeds()) + [p for _, p in compiled_seeds()]


def test_there_are_compiled_seeds():
    pytest.importorskip("ktapctl.lang")
    assert len(SEEDS) > 50


def test_everything_the_compiler_emits_verifies():
    pytest.importorskip("ktapctl.lang")
    count = 0
    for path, program in compiled_seeds():
        try:
            verify(decode(encode(program)))
        except VerifyError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{path}: {exc}")
        count += 1
    assert count > 50


def exercise(verified: VerifiedProgram) -> None:
    """Run everything a session would run, with the inline templates and with
    the one-line forms for huge functions; only Error records may report trouble."""
    saved = compact.COMPACT_THRESHOLD
    try:
        for threshold in (saved, -1):
            compact.COMPACT_THRESHOLD = threshold
            _exercise(verified)
    finally:
        compact.COMPACT_THRESHOLD = saved


def _exercise(verified: VerifiedProgram) -> None:
    records = []
    m = Machine(verified, emit=records.append, limits=SMALL)
    m.run_main(["fuzz.kp", "7", "word"])
    event = FakeEvent(execname="sh", args=(1, "two", -3), fields={"dfd": 3},
                      kstack=["a", "b"], ustack=["main"], memory={1: "mem"}, argstr="x(1)")
    for reg in list(m.registrations)[:4]:
        m.run_handler(reg, event)
        m.run_handler(reg, None)
    m.run_end()
    for record in records:
        if isinstance(record, Error):
            assert not record.message.startswith("internal error"), record


def check(program) -> None:
    start = time.perf_counter()
    try:
        verified = verify(program)
    except VerifyError:
        return
    finally:
        assert time.perf_counter() - start < 2.0, "verification took too long"
    exercise(verified)


@st.composite
def mutated(draw):
    program = draw(st.sampled_from(SEEDS))
    functions = list(program.functions)
    for _ in range(draw(st.integers(1, 3))):
        fi = draw(st.integers(0, len(functions) - 1))
        f = functions[fi]
        code = [list(ins) for ins in f.code]
        lines = list(f.lines)
        choice = draw(st.integers(0, 9))
        value = draw(st.one_of(st.integers(0, 12), st.integers(0, 300), st.integers(0, 2**32 - 1)))
        if choice <= 4 and code:  # change one operand or the opcode
            ins = draw(st.sampled_from(code))
            ins[draw(st.integers(0, len(ins) - 1))] = value
        elif choice == 5 and code:  # drop an instruction
            i = draw(st.integers(0, len(code) - 1))
            del code[i], lines[i]
        elif choice == 6:  # duplicate an instruction somewhere else
            if code:
                ins = list(draw(st.sampled_from(code)))
                i = draw(st.integers(0, len(code)))
                code.insert(i, ins)
                lines.insert(i, 1)
        elif choice == 7:
            f = dataclasses.replace(f, nregs=min(value, 250))
        elif choice == 8:
            f = dataclasses.replace(f, nparams=min(value, 64))
        elif choice == 9 and f.upvalues:
            ups = list(f.upvalues)
            i = draw(st.integers(0, len(ups) - 1))
            ups[i] = Upvalue(draw(st.integers(0, 1)), min(value, 250), ups[i].name)
            f = dataclasses.replace(f, upvalues=tuple(ups))
        functions[fi] = dataclasses.replace(
            f, code=tuple(tuple(i) for i in code), lines=tuple(lines))
    return dataclasses.replace(program, functions=tuple(functions))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_programs_are_verified_or_refused_and_then_run_safely(program):
    check(program)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_bytes_decode_or_fail_cleanly(data):
    try:
        program = decode(data)
    except DecodeError:
        return
    check(program)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.data())
def test_flipped_bytes_of_encoded_programs(program, data):
    raw = bytearray(encode(program))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(raw))
    except DecodeError:
        return
    check(decoded)


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_every_seed_runs_cleanly(index):
    exercise(verify(SEEDS[index]))


@st.composite
def one_bad_operand(draw):
    """A seed with one register, constant or opcode made invalid, and the
    words the refusal must contain."""
    from protocol.bytecode import opcodes
    program = draw(st.sampled_from(SEEDS))
    fi = draw(st.integers(0, len(program.functions) - 1))
    f = program.functions[fi]
    pc = draw(st.integers(0, len(f.code) - 1))
    ins = list(f.code[pc])
    row = opcodes.OPCODES[ins[0]]
    choices = [i for i, kind in enumerate(row.operands, start=1) if kind in "rwk"]
    if not choices or draw(st.booleans()):
        ins[0] = len(opcodes.OPCODES) + draw(st.integers(0, 1000))
        expect = f"instruction {pc} (?): unknown opcode {ins[0]}"
    else:
        position = draw(st.sampled_from(choices))
        kind = row.operands[position - 1]
        size = f.nregs if kind in "rw" else len(f.constants)
        ins[position] = size + 1 + draw(st.integers(0, 1000))  # (an empty run may name nregs)
        expect = f"instruction {pc} ({row.name}): "
        expect += f"constant {ins[position]}" if kind == "k" else f"register {ins[position]}"
    code = f.code[:pc] + (tuple(ins),) + f.code[pc + 1:]
    functions = list(program.functions)
    functions[fi] = dataclasses.replace(f, code=code)
    return dataclasses.replace(program, functions=tuple(functions)), fi, expect


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(one_bad_operand())
def test_a_bad_operand_is_refused_with_its_place(case):
    program, fi, expect = case
    with pytest.raises(VerifyError) as info:
        verify(program)
    message = str(info.value)
    assert message.startswith(f"function {fi} <"), message
    assert expect in message, message


# --- programs valid by construction: every template, nesting and empty block ---

_NREGS, _BOXES = 8, (6, 7)
_PLAIN = st.integers(0, 5)
_CONSTS = (0, 1, 5, -3, 0x7FFFFFFFFFFFFFFF, "s", "%d %s", None, True)


def _flat(draw, in_loop: bool, main: bool) -> list[tuple]:
    from protocol.bytecode.builtins import BUILTINS, EVENT_VARS, VARIADIC
    r = lambda: draw(_PLAIN)  # noqa: E731
    choice = draw(st.integers(0, 17))
    if not main and choice in (6, 10, 11, 12, 15):  # boxes and closures live in main
        choice = 16
    if choice == 0:
        return [("LOADK", r(), K(draw(st.sampled_from(_CONSTS))))]
    if choice == 1:
        name = draw(st.sampled_from(["ADD", "SUB", "MUL", "DIV", "MOD", "CONCAT", "EQ", "NE",
                                     "LT", "LE", "GETTABLE"]))
        return [(name, r(), r(), r())]
    if choice == 2:
        return [(draw(st.sampled_from(["SETTABLE", "ADDTABLE", "AGGTABLE"])), r(), r(), r())]
    if choice == 3:
        return [(draw(st.sampled_from(["MOVE", "NOT", "NEG"])), r(), r())]
    if choice == 4:
        return [("NEWTABLE", r())]
    if choice == 5:
        return [("LOADNIL", r())] if draw(st.booleans()) else [("LOADBOOL", r(), draw(st.integers(0, 1)))]
    if choice == 6:
        box = draw(st.sampled_from(_BOXES))
        return [draw(st.sampled_from([("NEWBOX", box), ("GETBOX", r(), box), ("SETBOX", box, r())]))]
    if choice == 7:
        b = draw(st.sampled_from(BUILTINS))
        hi = 3 if b.max_args == VARIADIC else b.max_args
        n = draw(st.integers(b.min_args, min(hi, 3)))
        return [("CALLB", r(), b.id, draw(st.integers(0, 5 - n + 1 if n else 5)), n)]
    if choice == 8:
        return [("EVAR", r(), draw(st.integers(0, len(EVENT_VARS) - 1)))]
    if choice == 9:
        return [("EFIELD", r(), K("s"))]
    if choice == 10:
        return [("CLOSURE", r(), 1)]
    if choice == 11:
        callee = draw(st.integers(0, 4))
        return [("CLOSURE", callee, 1), ("CALL", r(), callee, draw(st.integers(0, 5 - callee - 0)))]
    if choice == 12:
        return [("CLOSURE", 0, 1), ("REGISTER", draw(st.integers(0, 1)), 0)]
    if choice == 13 and in_loop:
        return [("BREAK",)]
    if choice == 14:
        return [("RETURN", r())]
    if choice == 15:
        return [("CLOSURE", 0, 1), ("TAILCALL", 0, draw(st.integers(0, 5)))]
    return [("LOADK", r(), K(1))]


def _block(draw, depth: int, loops: int, main: bool) -> list[tuple]:
    code: list[tuple] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 9)) if depth < 4 else 9
        if kind == 0:
            code += [("IF", draw(_PLAIN)), *_block(draw, depth + 1, loops, main)]
            if draw(st.booleans()):
                code += [("ELSE",), *_block(draw, depth + 1, loops, main)]
            code += [("END",)]
        elif kind == 1:
            code += [("LOOP",), *_block(draw, depth + 1, loops + 1, main), ("BREAK",), ("END",)]
        elif kind == 2:
            a, b, c, d = (draw(_PLAIN) for _ in range(4))
            code += [("LOADK", b, K(1)), ("LOADK", c, K(draw(st.integers(-3, 30)))),
                     ("LOADK", d, K(draw(st.sampled_from([1, 2, -1])))),
                     ("FORNUM", a, b, c, d), *_block(draw, depth + 1, loops + 1, main), ("END",)]
        elif kind == 3:
            t = draw(_PLAIN)
            code += [("NEWTABLE", t), ("LOADK", 0, K(1)), ("SETTABLE", t, 0, 0),
                     ("FORPAIRS", draw(_PLAIN), draw(_PLAIN), t),
                     *_block(draw, depth + 1, loops + 1, main), ("END",)]
        else:
            code += _flat(draw, loops > 0, main)
    return code


@st.composite
def well_formed(draw):
    child = fn([*_block(draw, 1, 0, False), ("GETUPVAL", 0, 0), ("RETURN", 0)], nparams=2,
               nregs=_NREGS, upvalues=[(0, 6, "up")], name="child")
    main = main_fn([*_block(draw, 1, 0, True), ("RETURN0",)], nregs=_NREGS, boxed=_BOXES)
    return prog(main, child, probes=[TRACE, END])


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(well_formed())
def test_well_formed_programs_verify_and_run_cleanly(program):
    exercise(verify(program))
