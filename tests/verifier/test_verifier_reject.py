"""Hand-made bad programs: each is refused with a message naming function and instruction."""

from __future__ import annotations

import dataclasses

import pytest
from ktap_asm import END, TICK, TRACE, K, fn, main_fn, prog

from ktapd.verifier import VerifiedProgram, VerifyError, verify
from protocol import limits
from protocol.bytecode.program import Probe, Upvalue

RET = ("RETURN0",)


def refused(program, match: str, **kw) -> str:
    with pytest.raises(VerifyError) as info:
        verify(program, **kw)
    assert match in str(info.value), str(info.value)
    return str(info.value)


def test_a_minimal_program_verifies():
    v = verify(prog(main_fn([RET])))
    assert isinstance(v, VerifiedProgram) and v.admin


def test_register_out_of_range_names_function_and_instruction():
    main = main_fn([("LOADK", 0, K(1)), RET])
    bad = dataclasses.replace(main, code=((1, 300, 0), (main.code[1])))
    message = refused(prog(bad), "register 300 is out of range (function has 1)")
    assert message.startswith("function 0 <main>, instruction 0 (LOADK): ")


def test_message_for_a_nested_function():
    f = fn([("ADD", 0, 1, 300), RET], nregs=12, name="helper")
    main = main_fn([("CLOSURE", 1, 1), RET])
    refused(prog(main, f), "function 1 <helper>, instruction 0 (ADD): register 300 is out of "
                           "range (function has 12)")


CASES = [
    # (description, main code, extra kwargs for main_fn, expected message part)
    ("unknown opcode", [(999,), RET], {}, "unknown opcode 999"),
    ("operand count", [("MOVE", 0), RET], {}, "takes 2 operands, got 1"),
    ("boxed register read as plain", [("MOVE", 1, 2), RET], {"boxed": (2,)}, "register 2 is boxed"),
    ("plain register used as box", [("NEWBOX", 1), RET], {}, "register 1 is not a boxed register"),
    ("constant index", [("LOADK", 1, 5), RET], {"nregs": 2}, "constant 5 is out of range"),
    ("string constant", [("EFIELD", 1, K(3)), RET], {}, "constant 0 is not a string"),
    ("upvalue index", [("GETUPVAL", 1, 0), RET], {}, "upvalue 0 is out of range"),
    ("closure of main", [("CLOSURE", 1, 0), RET], {}, "function 0 is out of range"),
    ("closure index", [("CLOSURE", 1, 7), RET], {}, "function 7 is out of range"),
    ("builtin id", [("CALLB", 1, 200, 1, 0), RET], {}, "unknown builtin 200"),
    ("builtin arity", [("CALLB", 1, "len", 1, 2), RET], {}, "builtin 'len' takes 1..1 arguments, not 2"),
    ("builtin too few", [("CALLB", 1, "printf", 1, 0), RET], {}, "builtin 'printf' takes 1..64"),
    ("count too big", [("CALLB", 1, "print", 1, 65), RET], {}, "builtin 'print' takes 0..64"),
    ("call run out of range", [("CALL", 1, 2, 5), RET], {"nregs": 4}, "register 4 is out of range"),
    ("call run hits a box", [("CALL", 1, 2, 2), RET], {"boxed": (4,)}, "register 4 is boxed"),
    ("callb run hits a box", [("CALLB", 1, "print", 2, 3), RET], {"boxed": (3,)}, "register 3 is boxed"),
    ("tailcall callee", [("TAILCALL", 9, 0)], {"nregs": 2}, "register 9 is out of range"),
    ("event variable", [("EVAR", 1, 99), RET], {}, "unknown event variable 99"),
    ("probe index", [("REGISTER", 3, 1), RET], {}, "probe 3 is out of range (program has 0)"),
    ("immediate", [("LOADBOOL", 1, 2), RET], {}, "immediate 2 must be 0 or 1"),
    ("else outside if", [("LOOP",), ("ELSE",), ("END",), RET], {}, "ELSE is not directly inside an IF"),
    ("two elses", [("IF", 1), ("ELSE",), ("ELSE",), ("END",), RET], {}, "ELSE is not directly inside an IF"),
    ("stray end", [("END",), RET], {}, "END without an open block"),
    ("break outside loop", [("IF", 1), ("BREAK",), ("END",), RET], {}, "BREAK is not inside a loop"),
    ("unclosed block", [("IF", 1), RET], {}, "1 block(s) are not closed"),
    ("no return", [("LOADNIL", 1)], {}, "must end with RETURN, RETURN0 or TAILCALL"),
    ("return inside block only", [("IF", 1), RET, ("END",)], {}, "must end with RETURN"),
    ("empty code", [], {}, "has no code"),
    ("nparams > nregs", [RET], {"nregs": 0}, "1 parameters do not fit in 0 registers"),
    ("boxed out of range", [RET], {"boxed": (1,), "nregs": 1}, "boxed register 1 is out of range"),
    ("deep blocks", [("IF", 1)] * (limits.MAX_BLOCK_DEPTH + 1) + [("END",)] * (limits.MAX_BLOCK_DEPTH + 1) + [RET],
     {}, f"blocks nest deeper than {limits.MAX_BLOCK_DEPTH}"),
    ("deep loops", [("LOOP",)] * (limits.MAX_LOOP_DEPTH + 1) + [("END",)] * (limits.MAX_LOOP_DEPTH + 1) + [RET],
     {}, f"loops nest deeper than {limits.MAX_LOOP_DEPTH}"),
]


@pytest.mark.parametrize("what, code, kw, message", CASES, ids=[c[0] for c in CASES])
def test_bad_main_is_refused(what, code, kw, message):
    refused(prog(main_fn(code, **kw)), message)


def test_break_in_an_if_inside_a_loop_is_fine():
    verify(prog(main_fn([("LOOP",), ("IF", 1), ("BREAK",), ("END",), ("END",), RET])))


def test_break_does_not_see_the_callers_loop():
    f = fn([("BREAK",), RET], name="inner")
    main = main_fn([("LOOP",), ("CLOSURE", 1, 1), ("BREAK",), ("END",), RET])
    refused(prog(main, f), "function 1 <inner>, instruction 0 (BREAK): BREAK is not inside a loop")


def test_main_must_take_one_parameter():
    refused(prog(main_fn([RET], nparams=0)), "must take exactly one parameter")


def test_upvalue_from_box_must_be_a_box_of_the_creator():
    child = fn([RET], upvalues=[(0, 3, "x")], name="child")
    refused(prog(main_fn([("CLOSURE", 1, 1), RET], nregs=4), child),
            "function 0 <main>, instruction 0 (CLOSURE): upvalue 0 of function 1 names register 3, "
            "which is not a boxed register here")
    verify(prog(main_fn([("NEWBOX", 3), ("CLOSURE", 1, 1), RET], boxed=(3,)), child))


def test_upvalue_from_upvalue_must_exist_in_the_creator():
    grandchild = fn([RET], upvalues=[(1, 1, "y")], name="grandchild")
    child = fn([("CLOSURE", 0, 2), RET], upvalues=[(0, 1, "y")], name="child")
    main = main_fn([("CLOSURE", 2, 1), RET], boxed=(1,))
    refused(prog(main, child, grandchild), "names upvalue 1, but this function has 1")
    ok_grandchild = dataclasses.replace(grandchild, upvalues=(Upvalue(1, 0, "y"),))
    v = verify(prog(main, child, ok_grandchild))
    assert v.parents == (None, 0, 1)


def test_a_function_cannot_create_itself_or_an_encloser():
    selfish = fn([("CLOSURE", 0, 1), RET], name="selfish")
    refused(prog(main_fn([("CLOSURE", 1, 1), RET]), selfish), "cannot create itself")
    a = fn([("CLOSURE", 0, 2), RET], name="a")
    b = fn([("CLOSURE", 0, 1), RET], name="b")
    refused(prog(main_fn([RET]), a, b), "encloses function")


def test_a_function_has_one_creator():
    a = fn([("CLOSURE", 0, 2), RET], name="a")
    b = fn([RET], name="b")
    refused(prog(main_fn([("CLOSURE", 1, 1), ("CLOSURE", 1, 2), RET]), a, b),
            "function 1 <a>, instruction 0 (CLOSURE): function 2 is already created by function 0")


def test_admin_only_builtins():
    main = main_fn([("CALLB", 1, "stack", 1, 0), RET])
    verify(prog(main))
    refused(prog(main), "builtin 'stack' is for administrators only", admin=False)
    refused(prog(main_fn([("LOADK", 1, K(1)), ("CALLB", 1, "ipof", 1, 1), RET])),
            "builtin 'ipof' is for administrators only", admin=False)


def test_empty_call_run_may_point_past_the_last_register():
    verify(prog(main_fn([("CALLB", 0, "print", 1, 0), RET], nregs=1)))
    refused(prog(main_fn([("CALLB", 0, "print", 2, 0), RET], nregs=1)), "register 2 is out of range")


@pytest.mark.parametrize("probe, message", [
    (Probe(kind="trace"), "a trace probe needs at least one event"),
    (Probe(kind="tick", period_ns=0), "a tick timer needs a positive period"),
    (Probe(kind="profile", period_ns=-5), "a profile timer needs a positive period"),
    (Probe(kind="bogus"), "unknown probe kind"),
    (Probe(kind="trace", events=("",)), "non-empty string"),
    (Probe(kind="tick", events=("x:y",), period_ns=1), "takes no events"),
    (Probe(kind="trace", events=("probe:/bin/sh:main\n-:x",)), "control characters"),
    (Probe(kind="trace", events=("sched:*",), filter="pid == 1\x00"), "control characters"),
])
def test_bad_probes(probe, message):
    refused(prog(main_fn([RET]), probes=[probe]), message)


def test_good_probes():
    verify(prog(main_fn([RET]), probes=[TRACE, TICK, END]))


def test_constants_are_checked():
    refused(prog(main_fn([RET], constants=(1 << 64,))), "constant 0 does not fit in 64 bits")
    refused(prog(main_fn([RET], constants=(1.5,))), "constant 0 has type float")


def test_line_table_must_match():
    refused(prog(main_fn([RET], lines=(1, 2))), "one entry per instruction")


def test_not_a_program():
    with pytest.raises(VerifyError):
        verify("bytes")  # type: ignore[arg-type]


def test_total_program_size_is_capped():
    from ktapd.verifier import MAX_PROGRAM_INSTRUCTIONS
    half = fn([("LOADNIL", 0)] * (MAX_PROGRAM_INSTRUCTIONS // 2) + [RET], name="half")
    main = main_fn([("LOADNIL", 0)] * (MAX_PROGRAM_INSTRUCTIONS // 2) + [RET])
    refused(prog(main, half), f"more than the {MAX_PROGRAM_INSTRUCTIONS} the VM loads")


@pytest.mark.parametrize("field, value, message", [
    ("nparams", True, "parameter count True"),
    ("nregs", 2.0, "register count 2.0"),
    ("boxed", [1], "must be a tuple"),
    ("boxed", (True,), "boxed register True"),
    ("upvalues", (Upvalue(True, 0, "x"),), "malformed descriptor"),
    ("constants", [1], "at most 65536 constants"),
    ("code", ((38.0,),), "non-empty tuple of integers"),
    ("code", ((),), "non-empty tuple of integers"),
    ("name", None, "the name must be a string"),
])
def test_wrong_python_types_are_refused_not_crashed(field, value, message):
    child = dataclasses.replace(fn([RET], name="c"), **{field: value})
    refused(prog(main_fn([RET]), child), message)


def test_total_program_weight_is_capped():
    from ktapd.verifier import MAX_PROGRAM_WEIGHT
    calls = MAX_PROGRAM_WEIGHT // (5 + 64) + 1
    main = main_fn([("CALLB", 0, "print", 1, 64)] * calls + [RET], nregs=66)
    refused(prog(main), "program is too large for the VM to load")
    verify(prog(main_fn([("CALLB", 0, "print", 1, 64)] * (calls // 2) + [RET], nregs=66)))
