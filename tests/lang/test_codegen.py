"""Codegen: the instruction shapes promised in codegen.py's docstring.

Checks compare disassembly (protocol/bytecode/disasm.py) without pc and
line columns, so they read like the lowering rules they test.  Every
program here also round-trips encode/decode and passes the verifier.
"""

from __future__ import annotations

import re

from ktapctl.lang import compile_source
from ktapd.verifier import verify
from protocol.bytecode import decode, encode
from protocol.bytecode.builtins import BUILTIN_BY_NAME
from protocol.bytecode.disasm import disassemble_function
from protocol.bytecode.program import (
    PROBE_END,
    PROBE_PROFILE,
    PROBE_TICK,
    PROBE_TRACE,
    UPVAL_FROM_BOX,
    UPVAL_FROM_UPVAL,
    Probe,
)


def compile_ok(source: str):
    program = compile_source(source, "t.kp")
    again = decode(encode(program))
    assert again == program
    verify(again, admin=True)
    for f in program.functions:
        assert len(f.lines) == len(f.code)
        assert f.code[-1] == (BY("RETURN0"),)
    return program


def BY(name: str) -> int:
    from protocol.bytecode.opcodes import BY_NAME

    return BY_NAME[name].number


def code(source: str, function: int = 0) -> list[str]:
    program = compile_ok(source)
    lines = disassemble_function(program.functions[function], function)[1:]
    out = []
    for line in lines:
        if line.lstrip().startswith("upvalue"):
            continue
        # "  12 [   3]   ADD       r1 r2 r3" -> "ADD r1 r2 r3" (keep indentation)
        m = re.match(r"\s*\d+ \[\s*\d+\] (\s*)(\S+)\s*(.*)", line)
        out.append(m.group(1) + " ".join(filter(None, [m.group(2), m.group(3)])))
    return out


def test_and_returns_an_operand():
    assert code("var a = 1\nvar b = 2\nvar c = a && b") == [
        "LOADK r1 k0(1)",
        "LOADK r2 k1(2)",
        "MOVE r3 r1",
        "IF r3",
        "  MOVE r3 r2",
        "END",
        "RETURN0",
    ]


def test_or_uses_the_else_branch():
    assert code("var a = nil\nvar c = a || 5") == [
        "LOADNIL r1",
        "MOVE r2 r1",
        "IF r2",
        "ELSE",
        "  LOADK r2 k0(5)",
        "END",
        "RETURN0",
    ]


def test_greater_swaps_operands():
    assert code("var a = 1\nvar b = 2\nvar c = a > b\nvar d = a >= b")[2:4] == [
        "LT r3 r2 r1",
        "LE r4 r2 r1",
    ]


def test_while_is_loop_with_a_breaking_test():
    assert code("var i = 0\nwhile (i < 3) { i += 1 }") == [
        "LOADK r1 k0(0)",
        "LOOP",
        "  LOADK r3 k1(3)",
        "  LT r2 r1 r3",
        "  IF r2",
        "  ELSE",
        "    BREAK",
        "  END",
        "  LOADK r2 k2(1)",
        "  ADD r1 r1 r2",
        "END",
        "RETURN0",
    ]


def test_while_true_has_no_test():
    assert code("while (1) { break }") == ["LOOP", "  BREAK", "END", "RETURN0"]


def test_elseif_is_a_nested_if_in_else():
    assert code("var x = 1\nif (x) { print(1) } elseif (nil) { print(2) } else { print(3) }") == [
        "LOADK r1 k0(1)",
        "IF r1",
        "  LOADK r3 k0(1)",
        "  CALLB r2 print r3 1",
        "ELSE",
        "  LOADNIL r2",
        "  IF r2",
        "    LOADK r3 k1(2)",
        "    CALLB r2 print r3 1",
        "  ELSE",
        "    LOADK r3 k2(3)",
        "    CALLB r2 print r3 1",
        "  END",
        "END",
        "RETURN0",
    ]


def test_return_of_a_closure_call_is_a_tail_call():
    src = "function f(n) { return f(n) }\nfunction g(n) { return len(n) }"
    assert code(src, 1) == [
        "GETUPVAL r1 u0(f)",
        "MOVE r2 r0",
        "TAILCALL r1 1",
        "RETURN0",
    ]
    # builtins are not tail-called
    assert code(src, 2) == ["MOVE r2 r0", "CALLB r1 len r2 1", "RETURN r1", "RETURN0"]


def test_add_assign_and_aggregate():
    assert code("var t = {}\nvar x = 0\nt['k'] += 2\nx += 3\nt.k <<< 4") == [
        "NEWTABLE r1",
        "LOADK r2 k0(0)",
        "LOADK r3 k1('k')",
        "LOADK r4 k2(2)",
        "ADDTABLE r1 r3 r4",
        "LOADK r3 k3(3)",
        "ADD r2 r2 r3",
        "LOADK r3 k1('k')",
        "LOADK r4 k4(4)",
        "AGGTABLE r1 r3 r4",
        "RETURN0",
    ]


def test_add_assign_on_an_upvalue_is_add_and_store():
    # the value first, then the variable (see tables/add_assign_order.kp)
    assert code("var n = 0\nfunction f() { n += 1 }", 1) == [
        "LOADK r0 k0(1)",
        "GETUPVAL r1 u0(n)",
        "ADD r1 r1 r0",
        "SETUPVAL u0(n) r1",
        "RETURN0",
    ]


def test_swap_evaluates_right_sides_first():
    assert code("var a = 1\nvar b = 2\na, b = b, a")[2:] == [
        "MOVE r3 r2",
        "MOVE r4 r1",
        "MOVE r1 r3",
        "MOVE r2 r4",
        "RETURN0",
    ]


def test_assignment_cannot_clobber_what_it_reads():
    # x = {x} must read the old x before NEWTABLE writes anything to x
    lines = code("var x = 1\nx = {x}\nx = nil || x\nx = 1 + x")
    assert lines[1] == "NEWTABLE r2"
    assert "MOVE r1 r2" in lines


def test_captured_locals_get_a_fresh_box_per_declaration():
    lines = code("var fs = {}\nfor (i = 1, 2) { var v = i\nfs[i] = function() { return v } }")
    assert lines[:4] == ["NEWTABLE r1", "LOADK r2 k0(1)", "LOADK r3 k1(2)", "LOADK r4 k0(1)"]
    assert lines[4] == "FORNUM r5 r2 r3 r4"
    # v's value is computed in r6, then boxed; r6 is free again for CLOSURE
    assert lines[5:9] == ["  MOVE r6 r5", "  NEWBOX box7", "  SETBOX box7 r6", "  CLOSURE r6 f1"]


def test_captured_loop_variable_is_copied_into_a_box():
    program = compile_ok("var fs = {}\nfor (i = 1, 2) { fs[i] = function() { return i } }")
    lines = code("var fs = {}\nfor (i = 1, 2) { fs[i] = function() { return i } }")
    assert lines[4] == "FORNUM r5 r2 r3 r4"
    assert lines[5:7] == ["  NEWBOX box8", "  SETBOX box8 r5"]
    assert program.functions[0].boxed == (8,)
    assert program.functions[1].upvalues[0].kind == UPVAL_FROM_BOX
    assert program.functions[1].upvalues[0].index == 8


def test_captured_pairs_variables():
    lines = code("var t = {}\nfor (k, v in pairs(t)) { var f = function() { return k .. v } }")
    assert lines[1] == "FORPAIRS r2 r3 r1"
    assert lines[2:6] == ["  NEWBOX box5", "  SETBOX box5 r2", "  NEWBOX box6", "  SETBOX box6 r3"]


def test_upvalue_chains():
    program = compile_ok("var a = 1\nfunction f() { return function() { return a } }")
    outer, inner = program.functions[1], program.functions[2]
    assert [(u.kind, u.name) for u in outer.upvalues] == [(UPVAL_FROM_BOX, "a")]
    assert [(u.kind, u.index, u.name) for u in inner.upvalues] == [(UPVAL_FROM_UPVAL, 0, "a")]


def test_captured_arg_is_boxed_from_register_0():
    lines = code("var f = function() { return arg[1] }")
    assert lines[:2] == ["NEWBOX box2", "SETBOX box2 r0"]


def test_recursive_local_function_captures_its_own_box():
    lines = code("function f(n) { return f(n) }")
    assert lines == ["NEWBOX box2", "CLOSURE r1 f1", "SETBOX box2 r1", "RETURN0"]


def test_probe_registration():
    src = (
        "trace syscalls:sys_enter_open, sched:* /pid == 1/ { print(argstr, args.filename) }\n"
        "tick-100ms { }\nprofile-10us { }\ntrace_end { }\n"
    )
    program = compile_ok(src)
    assert program.probes == (
        Probe(PROBE_TRACE, ("syscalls:sys_enter_open", "sched:*"), "pid == 1", 0, 1),
        Probe(PROBE_TICK, (), None, 100_000_000, 2),
        Probe(PROBE_PROFILE, (), None, 10_000, 3),
        Probe(PROBE_END, (), None, 0, 4),
    )
    assert code(src) == [
        "CLOSURE r1 f1", "REGISTER probe0 r1",
        "CLOSURE r1 f2", "REGISTER probe1 r1",
        "CLOSURE r1 f3", "REGISTER probe2 r1",
        "CLOSURE r1 f4", "REGISTER probe3 r1",
        "RETURN0",
    ]
    handler = program.functions[1]
    assert handler.nparams == 0 and handler.name == "<trace syscalls:sys_enter_open, sched:*>"
    assert code(src, 1) == [
        "EVAR r1 argstr",
        "EFIELD r2 k0('filename')",
        "CALLB r0 print r1 2",
        "RETURN0",
    ]
    assert [f.name for f in program.functions[2:]] == ["<tick-100ms>", "<profile-10us>", "<trace_end>"]


def test_raw_event_text_is_kept():
    src = "trace probe:/bin/bash:readline%return arg1=%ax, sdt:/lib/libc.so.6:setjmp /arg1 != 0/ { }"
    probe = compile_ok(src).probes[0]
    assert probe.events == ("probe:/bin/bash:readline%return arg1=%ax", "sdt:/lib/libc.so.6:setjmp")
    assert probe.filter == "arg1 != 0"


def test_namespaced_builtins_are_callb():
    program = compile_ok("var t = table.new(10, 0)\nansi.set_color3(1, 2, 3)")
    ids = [ins[2] for ins in program.functions[0].code if ins[0] == BY("CALLB")]
    assert ids == [BUILTIN_BY_NAME["table.new"].id, BUILTIN_BY_NAME["ansi.set_color3"].id]


def test_event_variables_are_evar():
    lines = code("trace a:b { print(pid, tid, uid, cpu, execname, probename, arg0, arg9) }", 1)
    assert [line.split()[0] for line in lines[:8]] == ["EVAR"] * 8
    assert [line.split()[2] for line in lines[:8]] == [
        "pid", "tid", "uid", "cpu", "execname", "probename", "arg0", "arg9"]


def test_line_table_follows_statements():
    program = compile_ok("var a = 1\n\nprint(a)\nwhile (a < 3) {\n  a += 1\n}\n")
    main = program.functions[0]
    # the loop's END belongs to the while statement; RETURN0 to the last one
    assert main.lines == (1, 3, 3, 4, 4, 4, 4, 4, 4, 4, 5, 5, 4, 4)


def test_negative_literals_fold():
    program = compile_ok("var a = -5\nvar b = -9223372036854775808")
    assert program.functions[0].constants == (-5, -9223372036854775808)
    assert code("var a = 1\nvar b = -a")[1] == "NEG r2 r1"


def test_table_constructor_positions_start_at_1():
    assert code("var t = {'a', x = 2, [10] = 3}") == [
        "NEWTABLE r1",
        "LOADK r2 k0(1)",
        "LOADK r3 k1('a')",
        "SETTABLE r1 r2 r3",
        "LOADK r2 k2('x')",
        "LOADK r3 k3(2)",
        "SETTABLE r1 r2 r3",
        "LOADK r2 k4(10)",
        "LOADK r3 k5(3)",
        "SETTABLE r1 r2 r3",
        "RETURN0",
    ]


def test_main_takes_arg_and_functions_their_params():
    program = compile_ok("function f(a, b, c) { }")
    assert program.functions[0].nparams == 1
    assert program.functions[0].name == "main"
    assert program.functions[1].nparams == 3
    assert program.functions[1].line == 1
    assert program.source_name == "t.kp"


def test_long_names_are_cut_to_what_the_format_keeps():
    name = "f" * 300
    program = compile_ok(f"var {name} = 1\nfunction {name}() {{ return {name} }}")
    assert len(program.functions[1].name) == 256
    assert all(len(u.name) <= 256 for u in program.functions[1].upvalues)


def test_integer_arithmetic_on_literals_is_folded():
    assert code("var a = 1024 * 1024 * 1024\nvar b = -7 / 2\nvar c = -7 % 2\nvar d = -(3 - 5)") == [
        "LOADK r1 k0(1073741824)",
        "LOADK r2 k1(-3)",
        "LOADK r3 k2(-1)",
        "LOADK r4 k3(2)",
        "RETURN0",
    ]
    # wraps like the VM
    assert code("var a = 0x7fffffffffffffff + 1")[0] == "LOADK r1 k0(-9223372036854775808)"
    # division by zero is left for run time (an error there), as is anything with a variable
    assert code("var a = 1 / 0")[:3] == ["LOADK r1 k0(1)", "LOADK r2 k1(0)", "DIV r1 r1 r2"]
    lines = code("var x = 2\nvar a = x * 3")
    assert "MUL r2 r1 r3" in lines
