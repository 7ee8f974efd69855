"""Values and semantics (LANGUAGE.md "Values and semantics"), through compiled scripts."""

from __future__ import annotations

import pytest
from ktap_asm import TICK, TRACE, K, fn, main_fn, prog
from vmrun import output, script, start

from protocol.limits import RuntimeLimits

pytest.importorskip("ktapctl.lang")


@pytest.mark.parametrize("expr, shown", [
    ("0x7fffffffffffffff + 1", "-9223372036854775808"),
    ("-0x7fffffffffffffff - 2", "9223372036854775807"),
    ("0x7fffffffffffffff * 2", "-2"),
    ("0xffffffffffffffff", "-1"),
    ("7 / 2", "3"), ("-7 / 2", "-3"), ("7 / -2", "-3"), ("-7 / -2", "3"),
    ("7 % 3", "1"), ("-7 % 3", "-1"), ("7 % -3", "1"),
    ("1 == 1", "true"), ("1 == \"1\"", "false"), ("\"a\" == \"a\"", "true"),
    ("nil == false", "false"), ("true != 1", "true"),
    ("2 < 3", "true"), ("3 <= 3", "true"), ("3 > 4", "false"),
    ("\"ab\" .. \"cd\"", "abcd"),
    ("!nil", "true"), ("!0", "false"), ("!\"\"", "false"),
    ("nil || 5", "5"), ("false && 1", "false"), ("0 && 7", "7"),
])
def test_expressions(expr, shown):
    assert output(f"print({expr})") == shown + "\n"


def test_most_negative_divided_by_minus_one_wraps():
    assert output("var a = -0x7fffffffffffffff - 1\nvar b = -1\nprint(a / b, a % b, -a)") == \
        "-9223372036854775808\t0\t-9223372036854775808\n"


@pytest.mark.parametrize("source, message", [
    ("var a = 0\nprint(1 / a)", "divide 0"),
    ("var a = 0\nprint(1 % a)", "divide 0"),
    ("print(1 + nil)", "attempt to do arithmetic on a nil value"),
    ("print(\"1\" + 1)", "attempt to do arithmetic on a string value"),
    ("print(true + 1)", "attempt to do arithmetic on a boolean value"),
    ("print(\"a\" < \"b\")", "attempt to compare a string value"),
    ("print(\"a\" .. 1)", "attempt to concatenate a number value"),
    ("var t = {}\nt[nil] = 1", "table index is nil"),
    ("var x = 1\nprint(x[1])", "attempt to index a number value"),
    ("var x = 1\nx()", "attempt to call a number value"),
    ("print(arg1)", "invalid event context"),
    ("print(argstr)", "invalid event context"),
    ("print(probename)", "invalid event context"),
])
def test_runtime_errors(source, message):
    assert output(source).splitlines()[-1].startswith(f"error: {message}")


def test_runtime_error_names_the_line():
    run = script("var a = 1\n\nprint(a / 0)\n")
    assert not run.ok
    (error,) = run.errors()
    assert (error.message, error.source, error.line) == ("divide 0", "test.kp", 3)


def test_error_inside_a_function_names_the_functions_line():
    run = script("function f(x) {\n  return x + nil\n}\nprint(f(1))\n")
    assert run.errors()[0].line == 2


def test_output_before_an_error_is_kept_in_order():
    assert output("print(1)\nprint(2)\nprint(1/0)\nprint(3)") == "1\n2\nerror: divide 0\n"


def test_booleans_and_numbers_are_different_table_keys():
    assert output("var t = {}\nt[1] = \"one\"\nt[true] = \"yes\"\nt[0] = \"zero\"\nt[false] = \"no\"\n"
                  "print(t[1], t[true], t[0], t[false], len(t))\n"
                  "var n = 0\nfor (k, v in pairs(t)) { if (k == true) { n += 1 } }\nprint(n)") == \
        "one\tyes\tzero\tno\t4\n1\n"


def test_table_semantics():
    assert output("var t = {}\nt[\"a\"] = 1\nt[\"a\"] = nil\nprint(t[\"a\"], len(t), t[\"zz\"])") == \
        "nil\t0\tnil\n"
    assert output("var t = {}\nt[\"a\"] += 5\nt[\"a\"] += 2\nprint(t[\"a\"])") == "7\n"
    assert output("var t = {}\nt[1] = \"x\"\nt[1] += 1").endswith(
        "error: attempt to do arithmetic on a string value\n")
    assert output("var t = {10, 20, 30}\nprint(t[1], t[3], len(t))") == "10\t30\t3\n"


def test_table_overflow_names_the_table():
    limits = RuntimeLimits(table_entries=3)
    run = script("var counts = {}\ntrace syscalls:sys_enter_openat { counts[arg0] += 1 }", limits=limits)
    from vmrun import EVENT
    for n in range(3):
        assert run.fire(EVENT.__class__(args=(n,)))
    assert run.fire(EVENT.__class__(args=(1,)))  # an existing key still fits
    assert not run.fire(EVENT.__class__(args=(99,)))
    assert run.errors()[0].message == "table overflow (table counts has reached its limit of 3 entries)"


def test_table_overflow_on_plain_store_and_table_new():
    limits = RuntimeLimits(table_entries=2, table_entries_max=5)
    assert output("var t = {}\nfor (i = 1, 3) { t[i] = i }", limits=limits).endswith(
        "has reached its limit of 2 entries)\n")
    assert output("var t = table.new(3, 1)\nfor (i = 1, 4) { t[i] = i }\nprint(len(t))",
                  limits=limits) == "4\n"
    assert output("var t = table.new(100, 100)\nfor (i = 1, 6) { t[i] = i }",
                  limits=limits).endswith("limit of 5 entries)\n")


def test_string_limit_counts_characters_and_is_an_error():
    limits = RuntimeLimits(string_bytes=5)
    assert output("print(\"ab\" .. \"cde\")", limits=limits) == "abcde\n"
    assert output("print(\"ab\" .. \"cdef\")", limits=limits) == \
        "error: string is longer than the limit of 5 characters\n"


def test_pairs_is_a_snapshot_and_mutation_is_allowed():
    assert output("var t = {}\nt[1] = 1\nt[2] = 2\nvar n = 0\n"
                  "for (k, v in pairs(t)) { t[k + 10] = v\n n += 1 }\nprint(n, len(t))") == "2\t4\n"


def test_closures_capture_each_iteration():
    assert output("var fs = {}\nfor (i = 1, 3) { fs[i] = function () { return i * 10 } }\n"
                  "print(fs[1](), fs[2](), fs[3]())") == "10\t20\t30\n"


def test_closures_share_upvalues():
    assert output("var n = 0\nfunction inc() { n += 1 }\ninc()\ninc()\nprint(n)") == "2\n"


def test_missing_parameters_are_nil_and_extra_arguments_ignored():
    assert output("function f(a, b) { print(a, b) }\nf(1)\nf(1, 2, 3)") == "1\tnil\n1\t2\n"


def test_a_million_tail_calls_run_in_the_main_chunk():
    assert output("function f(n) { if (n == 0) { return \"done\" } return f(n - 1) }\n"
                  "print(f(1000000))") == "done\n"


def test_tail_calls_still_count_steps():
    limits = RuntimeLimits(main_steps=1000)
    assert output("function f(n) { if (n == 0) { return 0 } return f(n - 1) }\nprint(f(2000))",
                  limits=limits) == "error: loop execute count exceed max limit\n"


def test_recursion_depth_is_limited():
    src = "function f(n) { if (n == 0) { return 0 } return 1 + f(n - 1) }\nprint(f({N}))"
    assert output(src.replace("{N}", "199")) == "199\n"
    assert output(src.replace("{N}", "250")) == "error: stack overflow\n"


@pytest.mark.parametrize("loop", [
    "while (true) { }",
    "for (i = 1, 1000000000) { }",
    "var t = {}\nfor (i = 1, 10) { t[i] = i }\nwhile (1) { for (k, v in pairs(t)) { } }",
    "function f() { }\nwhile (1) { f() }",
])
def test_every_handler_ends(loop):
    run = script(f"trace syscalls:sys_enter_openat {{ {loop} }}")
    assert not run.fire(None)
    assert run.errors()[0].message == "loop execute count exceed max limit"


def test_leaf_loop_budget_is_exact():
    limits = RuntimeLimits(handler_steps=100)
    body = "var n = 0\nfor (i = 1, {A}) {{ n += 1 }}\nfor (i = 1, {B}) {{ n += 1 }}"
    for a, b, ok in [(50, 50, True), (50, 51, False), (100, 0, True), (101, 0, False),
                     (30, 70, True), (0, 101, False)]:
        run = script("trace syscalls:sys_enter_openat { " + body.format(A=a, B=b) + " }",
                     limits=limits)
        assert run.fire(None) is ok, (a, b)


def test_leaf_loop_with_break_is_charged_only_for_passes_done():
    limits = RuntimeLimits(handler_steps=100)
    run = script("trace syscalls:sys_enter_openat {\n"
                 "  for (i = 1, 1000) { if (i == 60) { break } }\n"
                 "  for (i = 1, 40) { }\n}", limits=limits)
    assert run.fire(None)  # 60 + 40 passes
    run = script("trace syscalls:sys_enter_openat {\n"
                 "  for (i = 1, 1000) { if (i == 61) { break } }\n"
                 "  for (i = 1, 40) { }\n}", limits=limits)
    assert not run.fire(None)


def test_return_from_a_leaf_loop_charges_its_passes():
    limits = RuntimeLimits(main_steps=100)
    src = ("function f() {{ for (i = 1, 1000) {{ if (i == {N}) {{ return i }} }} }}\n"
           "var a = f()\nfor (i = 1, 40) {{ }}\nprint(a)")
    assert output(src.format(N=59), limits=limits) == "59\n"  # 1 call + 59 + 40
    assert output(src.format(N=61), limits=limits).endswith("exceed max limit\n")


def test_arg_table():
    assert output("print(arg[0], arg[1], arg[1] + 1, arg[2], arg[3])",
                  args=["s.kp", "41", "word", "-3"]) == "s.kp\t41\t42\tword\t-3\n"


def test_register_outside_the_main_chunk_is_an_error():
    # The compiler refuses `trace` inside a function; bytecode may still try.
    handler = fn([("CLOSURE", 0, 2), ("REGISTER", 0, 0), ("RETURN0",)], name="tick")
    body = fn([("RETURN0",)], name="body")
    main = main_fn([("CLOSURE", 1, 1), ("REGISTER", 1, 1), ("RETURN0",)])
    run = start(prog(main, handler, body, probes=[TRACE, TICK]))
    assert run.ok and len(run.machine.registrations) == 1
    assert not run.fire(None)
    assert "only can be called in RUNNING state" in run.errors()[0].message


def test_exit_in_the_main_chunk_stops_it():
    run = script("print(1)\nexit()\nprint(2)")
    assert run.ok and run.machine.exit_requested and run.text() == "1\n"


def test_exit_in_a_handler_stops_handlers_but_not_trace_end():
    run = script("var n = 0\ntrace syscalls:sys_enter_openat { n += 1\n exit()\n n += 100 }\n"
                 "trace_end { print(n) }")
    assert run.fire(None) and run.machine.exit_requested
    assert run.fire(None)  # ignored after exit
    assert run.machine.run_end()
    assert run.text() == "1\n"


def test_trace_end_does_not_run_after_an_error():
    run = script("trace syscalls:sys_enter_openat { print(1 / 0) }\ntrace_end { print(\"end\") }")
    assert not run.fire(None)
    assert not run.machine.run_end()
    assert not run.fire(None)
    assert run.text() == "" and len(run.errors()) == 1


def test_trace_end_is_not_a_registration():
    run = script("trace_end { print(\"bye\") }\ntick-1s { }")
    assert [r.probe.kind for r in run.machine.registrations] == ["tick"]
    assert run.machine.run_end() and run.text() == "bye\n"


def test_a_loop_over_the_whole_int64_range_just_runs_out_of_budget():
    limits = RuntimeLimits(main_steps=1000)
    for src in ("for (i = -0x7fffffffffffffff - 1, 0x7fffffffffffffff) { }",
                "var n = 0\nfor (i = 0x7fffffffffffffff, -0x7fffffffffffffff - 1, -1) { n += 1 }",
                "function f() { }\nfor (i = -0x7fffffffffffffff - 1, 0x7fffffffffffffff) { f() }"):
        assert output(src, limits=limits) == "error: loop execute count exceed max limit\n", src


def test_for_step_zero_is_an_error():
    assert output("var z = 0\nfor (i = 1, 2, z) { }") == "error: 'for' step is zero\n"


def test_deepest_nesting_allowed_translates_and_runs():
    from protocol import limits as L
    loops, ifs = L.MAX_LOOP_DEPTH, L.MAX_BLOCK_DEPTH - L.MAX_LOOP_DEPTH
    code = [("LOADBOOL", 1, 1)] + [("LOOP",)] * loops + [("IF", 1)] * ifs
    code += [("CLOSURE", 2, 1), ("CALL", 2, 2, 0), ("NEWTABLE", 4), ("LOADK", 3, K(1)),
             ("ADDTABLE", 4, 3, 3), ("CALLB", 5, "print", 3, 1), ("BREAK",)]
    code += [("END",)] * ifs + [("END",), ("BREAK",)] * (loops - 1) + [("END",), ("RETURN0",)]
    run = start(prog(main_fn(code), fn([("RETURN0",)])))
    assert run.ok and run.text() == "1\n"


def test_a_register_nothing_writes_reads_as_nil():
    run = start(prog(main_fn([("CALLB", 2, "print", 1, 1), ("RETURN0",)], nregs=3)))
    assert run.text() == "nil\n"


def test_table_copies_are_charged_to_the_budget():
    limits = RuntimeLimits(handler_steps=1000, table_entries=100_000)
    fill = "var t = {}\nfor (i = 1, 16000) { t[i] = i }\n"
    # one snapshot of 16000 entries costs 1000 steps, plus the loop passes
    run = script(fill + "trace syscalls:sys_enter_openat { for (k, v in pairs(t)) { break } }",
                 limits=limits)
    assert not run.fire(None)
    run = script(fill + "trace syscalls:sys_enter_openat { while (1) { print_hist(t, 1) } }",
                 limits=limits)
    assert not run.fire(None)
    assert run.errors()[0].message == "loop execute count exceed max limit"
    small = script("var t = {1, 2, 3}\ntrace syscalls:sys_enter_openat { "
                   "for (k, v in pairs(t)) { }\nprint_hist(t) }", limits=limits)
    assert small.fire(None)


def test_program_text_never_becomes_source():
    from ktapd.vm import translate
    evil = "\"); __import__('os').system('false') #\n"
    main = main_fn([("NEWBOX", 1), ("NEWTABLE", 2), ("SETBOX", 1, 2), ("CLOSURE", 2, 1),
                    ("LOADK", 3, K(evil)), ("CALLB", 4, "print", 3, 1), ("EFIELD", 5, K(evil)),
                    ("RETURN0",)], boxed=(1,), name=evil)
    child = fn([("GETUPVAL", 0, 0), ("RETURN", 0)], upvalues=[(0, 1, evil)], name=evil)
    program = prog(main, child, source=evil)
    source = translate.translate_program(program, string_bytes=511, table_entries=10,
                                         call_depth=10)
    assert "__import__" not in source.text()
    run = start(program)
    assert run.text() == evil + "\n"
    assert run.errors()[0].message == "invalid event context"


def test_limits_must_be_integers():
    from ktapd.verifier import verify
    from ktapd.vm import Machine
    with pytest.raises(ValueError):
        Machine(verify(prog(main_fn([("RETURN0",)]))), emit=print,
                limits=RuntimeLimits(string_bytes="5"))  # type: ignore[arg-type]


def test_print_hist_inside_a_counted_loop_is_charged_exactly():
    limits = RuntimeLimits(handler_steps=100, table_entries=100_000)
    fill = "var t = {}\nfor (i = 1, 800) { t[i] = i }\n"  # print_hist costs 50 steps
    ok = script(fill + "trace syscalls:sys_enter_openat { for (i = 1, 1) { print_hist(t, 1) } }",
                limits=limits)
    assert ok.fire(None)
    over = script(fill + "trace syscalls:sys_enter_openat { for (i = 1, 2) { print_hist(t, 1) } }",
                  limits=limits)
    assert not over.fire(None)


@pytest.mark.parametrize("writes_var", [False, True])
@pytest.mark.parametrize("passes, ok", [(0, True), (1, True), (10, True), (11, False)])
def test_counted_loop_charges(writes_var, passes, ok):
    # main: for r4 = 1, passes { [r4 = 7] }; 10 steps of budget
    body = [("LOADK", 4, K(7))] if writes_var else []
    main = main_fn([("LOADK", 1, K(1)), ("LOADK", 2, K(passes)), ("LOADK", 3, K(1)),
                    ("FORNUM", 4, 1, 2, 3), *body, ("END",),
                    ("LOADK", 5, K(1)), ("LOADK", 6, K(10 - min(passes, 10))), ("LOADK", 7, K(1)),
                    ("FORNUM", 8, 5, 6, 7), ("END",), ("RETURN0",)])
    run = start(prog(main), limits=RuntimeLimits(main_steps=10))
    assert run.ok is ok, run.errors()
