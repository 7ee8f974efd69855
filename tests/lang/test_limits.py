"""Every format limit of protocol/limits.py is a compile error with a plain message.

Each limit is tested at its real value, just inside (compiles, and the
verifier accepts it) and just outside (the error names the function and the
limit).  The two limits that need 65,536+ source tokens to reach
(constants, program bytes) are also exercised with the limit lowered, so
the check is tested without a multi-second compile.
"""

from __future__ import annotations

import pytest

from ktapctl.lang import CompileError, compile_source
from ktapd.verifier import verify
from protocol import limits
from protocol.bytecode import decode, encode


def ok(source: str):
    program = compile_source(source, "limit.kp")
    verify(decode(encode(program)), admin=True)
    return program


def error(source: str, filename: str = "limit.kp") -> str:
    with pytest.raises(CompileError) as info:
        compile_source(source, filename)
    return info.value.render()


def test_registers_locals():
    # main has `arg` in register 0, so 249 more locals fill the 250 registers
    ok("".join(f"var v{i} = {i}\n" for i in range(249)))
    text = error("".join(f"var v{i} = {i}\n" for i in range(250)))
    assert "too many local variables in function main (limit 250)" in text


def test_registers_locals_in_a_function():
    body = "".join(f"var v{i} = {i}; " for i in range(251))
    text = error(f"function big() {{ {body} }}")
    assert "too many local variables in function big (limit 250)" in text


def test_registers_boxed_locals_count_too():
    # captured locals live in boxed registers beside the plain ones
    decls = "".join(f"var v{i} = {i}\n" for i in range(130))
    uses = "".join(f"var f{i} = function() {{ return v{i} }}\n" for i in range(130))
    text = error(decls + uses)
    assert "too many local variables in function main (limit 250)" in text


def test_registers_temporaries():
    # right-nested: each level keeps a temporary for its right operand
    # (a variable, so that constant folding does not remove the arithmetic)
    nested = "x"
    for _ in range(limits.MAX_REGISTERS):
        nested = f"(x + {nested})"
    text = error(f"var x = 1\nprint({nested})")
    assert "expression too complex in function main (more than 250 registers)" in text
    nested = "x"
    for _ in range(100):
        nested = f"(x + {nested})"
    ok(f"var x = 1\nprint({nested})")


def test_upvalues():
    # 200 captured vars in main and 60 in `outer`: `inner` needs 260 upvalues
    main_vars = "".join(f"var m{i} = {i}\n" for i in range(200))
    outer_vars = "".join(f"var o{i} = {i}; " for i in range(60))
    uses = " + ".join([f"m{i}" for i in range(200)] + [f"o{i}" for i in range(60)])
    source = f"{main_vars}function outer() {{ {outer_vars} var inner = function() {{ return {uses} }} }}"
    text = error(source)
    assert "too many upvalues in function <anonymous> (limit 250)" in text
    uses_ok = " + ".join([f"m{i}" for i in range(200)] + [f"o{i}" for i in range(50)])
    ok(f"{main_vars}function outer() {{ {outer_vars} var inner = function() {{ return {uses_ok} }} }}")


def test_constants(monkeypatch):
    monkeypatch.setattr(limits, "MAX_CONSTANTS", 100)
    ok("var a = 0\n" + "".join(f"a = {i}\n" for i in range(1, 100)))
    text = error("var a = 0\n" + "".join(f"a = {i}\n" for i in range(1, 101)))
    assert "limit.kp:101:5: error: too many constants in function main (limit 100)" in text


def test_constants_are_shared_within_a_function():
    program = ok("print(7, 7, 7, 'x', 'x')\nvar t = {7, 7}")
    assert program.functions[0].constants.count(7) == 1
    # True and 1 are different constants even though Python says 1 == True
    program = ok("print(1, true)")
    assert program.functions[0].constants == (1,)


def test_constant_string_length():
    ok('print("' + "x" * limits.MAX_CONSTANT_STRING + '")')
    text = error('print("' + "x" * (limits.MAX_CONSTANT_STRING + 1) + '")')
    assert "string constant longer than 65536 characters" in text


def test_code_length():
    # 200 NOTs per statement: 328 of them need more than 65,536 instructions
    line = "a = " + "!" * 200 + "b\n"
    text = error("var a = 1; var b = 2\n" + line * 328)
    assert "function main is too long (more than 65536 instructions)" in text
    ok("var a = 1; var b = 2\n" + line * 320)


def test_loop_depth():
    def nest(n):
        return "while (1) { " * n + "break " + "} " * n

    ok(nest(limits.MAX_LOOP_DEPTH))
    text = error(nest(limits.MAX_LOOP_DEPTH + 1))
    assert "loops nested too deeply in function main (limit 16)" in text
    # for loops count too
    text = error("for (i = 1, 2) { " * 17 + "}" * 17)
    assert "loops nested too deeply" in text


def test_block_depth():
    def nest(n):
        return "if (1) { " * n + "print(1) " + "} " * n

    ok(nest(limits.MAX_BLOCK_DEPTH))
    text = error(nest(limits.MAX_BLOCK_DEPTH + 1))
    assert "blocks nested too deeply in function main (limit 64" in text


def test_block_depth_counts_elseif_chains():
    chain = "var x = 1\nif (x == 0) { }" + "".join(f" elseif (x == {i}) {{ }}" for i in range(1, 70))
    text = error(chain)
    assert "blocks nested too deeply in function main" in text
    ok("var x = 1\nif (x == 0) { }" + "".join(f" elseif (x == {i}) {{ }}" for i in range(1, 60)))


def test_call_arguments():
    ok("print(" + ", ".join(["1"] * limits.MAX_CALL_ARGS) + ")")
    text = error("print(" + ", ".join(["1"] * (limits.MAX_CALL_ARGS + 1)) + ")")
    assert "too many arguments in a call (limit 64)" in text
    text = error("var f = function() {}\nf(" + ", ".join(["1"] * 65) + ")")
    assert "too many arguments in a call (limit 64)" in text


def test_parameters():
    params = ", ".join(f"p{i}" for i in range(limits.MAX_PARAMS))
    ok(f"function f({params}) {{ }}")
    params = ", ".join(f"p{i}" for i in range(limits.MAX_PARAMS + 1))
    text = error(f"function f({params}) {{ }}")
    assert "too many parameters in function f (limit 64)" in text


def test_functions():
    # main + 4095 functions is the most a program may have
    ok("var f\n" + "f = function() { }\n" * (limits.MAX_FUNCTIONS - 1))
    text = error("var f\n" + "f = function() { }\n" * limits.MAX_FUNCTIONS)
    assert "too many functions in the script (limit 4096)" in text


def test_probes():
    ok("trace_end { }\n" * limits.MAX_PROBES)
    text = error("trace_end { }\n" * (limits.MAX_PROBES + 1))
    assert f"limit.kp:{limits.MAX_PROBES + 1}:1: error: too many probes in the script (limit 1024)" in text


def test_events_per_probe():
    events = ", ".join(f"sched:e{i}" for i in range(limits.MAX_EVENTS_PER_PROBE))
    assert len(ok(f"trace {events} {{ }}").probes[0].events) == 64
    events = ", ".join(f"sched:e{i}" for i in range(limits.MAX_EVENTS_PER_PROBE + 1))
    text = error(f"trace {events} {{ }}")
    assert "too many events in one 'trace' (limit 64)" in text


def test_spec_length():
    spec = "sched:" + "e" * (limits.MAX_SPEC_LENGTH - 6)
    ok(f"trace {spec} {{ }}")
    text = error(f"trace {spec}x {{ }}")
    assert "event specification longer than 4096 characters" in text


def test_filter_length():
    ok("trace a:b /" + "x" * limits.MAX_SPEC_LENGTH + "/ { }")
    text = error("trace a:b /" + "x" * (limits.MAX_SPEC_LENGTH + 1) + "/ { }")
    assert "filter longer than 4096 characters" in text


def test_source_name():
    ok_name = "x" * limits.MAX_SOURCE_NAME
    assert compile_source("print(1)", ok_name).source_name == ok_name
    text = error("print(1)", "x" * (limits.MAX_SOURCE_NAME + 1))
    assert "file name longer than 4096 characters" in text


def test_program_bytes(monkeypatch):
    monkeypatch.setattr(limits, "MAX_PROGRAM_BYTES", 10_000)
    ok('print("' + "x" * 9_000 + '")')
    text = error('print("' + "x" * 11_000 + '")')
    assert "compiled program is 11" in text and "more than the limit of 10000" in text


def test_program_bytes_real_limit():
    # 260 distinct strings of 65,530 characters: about 17 MB of constants
    source = "var a = 0\n" + "".join(f'a = "{i:065530d}"\n' for i in range(260))
    text = error(source)
    assert "more than the limit of 16777216" in text


def test_nesting_beyond_the_recursion_budget_is_an_error_not_a_crash():
    text = error("print(" + "(" * 30_000 + "1" + ")" * 30_000 + ")")
    assert "nested too deeply" in text
