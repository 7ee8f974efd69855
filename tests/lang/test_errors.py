"""Golden compile-error text: exact messages, positions, source line and caret.

These pin down what a person sees for the common mistakes (LANGUAGE.md
syntax, lexical errors, name and arity checks, event specs).  Each case is
(name, source, the full rendered error for file "t.kp").
"""

from __future__ import annotations

import pytest

from ktapctl.lang import CompileError, compile_source

CASES = [
    ('unfinished string', 'print("abc',
     't.kp:1:7: error: unfinished string\nprint("abc\n      ^~~~'),
    ('malformed number', 'var x = 1.5',
     't.kp:1:9: error: malformed number\nvar x = 1.5\n        ^~~'),
    ('malformed octal', 'var x = 09',
     't.kp:1:9: error: malformed number\nvar x = 09\n        ^~'),
    ('condition paren', 'if (x == 1 { }',
     "t.kp:1:12: error: expected ')' after condition, found '{'\nif (x == 1 { }\n           ^"),
    ('condition needs parens', 'while x { }',
     "t.kp:1:7: error: expected '(' after 'while': conditions take parentheses\nwhile x { }\n      ^"),
    ('trace block', 'trace syscalls:sys_enter_open print(1)',
     "t.kp:1:31: error: expected '{' to start the block of 'trace' (or ',' before another event), found 'print(1)'\ntrace syscalls:sys_enter_open print(1)\n                              ^~~~~~~~"),
    ('trace block eof', 'trace syscalls:sys_enter_open',
     "t.kp:1:30: error: expected '{' to start the block of 'trace', found end of the script\ntrace syscalls:sys_enter_open\n                             ^"),
    ('tick block', 'tick-1s print(1)',
     "t.kp:1:9: error: expected '{' to start the block of 'tick', found name 'print'\ntick-1s print(1)\n        ^~~~~"),
    ('tick dash', 'tick 1s { }',
     "t.kp:1:6: error: expected '-' and an interval after 'tick' (as in tick-1s)\ntick 1s { }\n     ^"),
    ('else alone', 'print(1)\nelse { }',
     "t.kp:2:1: error: unexpected 'else': it must follow the block of an 'if'\nelse { }\n^~~~"),
    ('function body', 'function f(a) return a',
     "t.kp:1:15: error: expected '{' to start the body of the function, found 'return'\nfunction f(a) return a\n              ^~~~~~"),
    ('agg lhs', 'var t = {}\nt <<< 1',
     "t.kp:2:1: error: the left side of '<<<' must be a table element such as t[k]\nt <<< 1\n^"),
    ('unknown name', 'print(coutn)',
     "t.kp:1:7: error: unknown name 'coutn'\nprint(coutn)\n      ^~~~~"),
    ('unclosed block', 'while (1) { print(1) ',
     "t.kp:1:21: error: unexpected end of the script: expected '}' to close a block\nwhile (1) { print(1) \n                    ^"),
    ('stray brace', '}',
     "t.kp:1:1: error: unexpected '}': no block is open here\n}\n^"),
    ('expression expected', 'var a = {}\na.b = ',
     't.kp:2:6: error: unexpected end of the script; expected an expression\na.b = \n     ^'),
    ('not a statement', 'var x = 1\n\n  x += "a" x',
     't.kp:3:12: error: this expression is not a statement: expected an assignment or a call\n  x += "a" x\n           ^'),
    ('missing call paren', 'print("a" "b")',
     't.kp:1:11: error: unexpected string; expected \')\'\nprint("a" "b")\n          ^~~'),
    ('for paren', 'var t = {}\nfor (k, v in pairs(t) { }',
     "t.kp:2:23: error: expected ')' to close 'for (...)', found '{'\nfor (k, v in pairs(t) { }\n                      ^"),
    ('bad character', 'print(@)',
     "t.kp:1:7: error: unexpected character '@'\nprint(@)\n      ^"),
    ('bad escape', 'var s = "\\q"',
     't.kp:1:10: error: invalid escape sequence \'\\q\'\nvar s = "\\q"\n         ^~'),
    ('kernel only', 'print(kernel_string(0))',
     "t.kp:1:7: error: 'kernel_string' is not available: reads kernel memory, which a userspace tracer cannot do\nprint(kernel_string(0))\n      ^~~~~~~~~~~~~"),
    ('undeclared', 'x = 1',
     "t.kp:1:1: error: assignment to undeclared variable 'x' (declare it first: var x)\nx = 1\n^"),
    ('arity', 'print_hist()',
     "t.kp:1:1: error: wrong number of arguments to 'print_hist': expected 1 or 2, got 0\nprint_hist()\n^~~~~~~~~~~~"),
    ('tabs', '\tprint(nope)',
     "t.kp:1:8: error: unknown name 'nope'\n\tprint(nope)\n\t      ^~~~"),
    ('multi-line span', 'print(1 +\n  nope)',
     "t.kp:2:3: error: unknown name 'nope'\n  nope)\n  ^~~~"),
    ('bad interval', 'profile-5min { }',
     "t.kp:1:9: error: invalid interval '5min': expected a number and a unit (s, sec, ms, msec, us, usec)\nprofile-5min { }\n        ^~~~"),
    ('bad spec', 'trace sched { }',
     "t.kp:1:7: error: invalid tracepoint 'sched': expected SUBSYSTEM:EVENT such as syscalls:sys_enter_openat\ntrace sched { }\n      ^~~~~"),
    ('empty filter', 'trace a:b /  / { }',
     't.kp:1:11: error: empty filter\ntrace a:b /  / { }\n          ^~~~'),
    ('filter newline', 'trace a:b /x ==\n 1/ { }',
     't.kp:1:11: error: filter contains a control character or newline\ntrace a:b /x ==\n          ^~~~~'),
    ('else if', 'if (1) { } else if (2) { }',
     "t.kp:1:17: error: expected '{' after 'else'; for another condition write 'elseif (...)'\nif (1) { } else if (2) { }\n                ^~"),
    ('local', 'local x = 1',
     "t.kp:1:1: error: 'local' is not a ktap word: declare variables with 'var'\nlocal x = 1\n^~~~~"),
    ('minus equals', 'var x = 1\nx -= 1',
     "t.kp:2:3: error: ktap has '+=' but no '-=': write x = x - y\nx -= 1\n  ^"),
    ('c for', 'for (i = 0; i < 3; i += 1) { }',
     "t.kp:1:11: error: unexpected ';': ktap's for is 'for (i = first, last[, step])', not C's\nfor (i = 0; i < 3; i += 1) { }\n          ^"),
    ('unfinished long comment', '--[==[ open\n]] no',
     't.kp:1:1: error: unfinished long comment\n--[==[ open\n^~~~~~'),
    ('decimal escape', 'print("\\256")',
     't.kp:1:8: error: invalid escape sequence: decimal escape above 255\nprint("\\256")\n       ^~~~'),
    ('hex escape', 'print("\\x4")',
     't.kp:1:8: error: invalid escape sequence: \\x needs two hex digits\nprint("\\x4")\n       ^~'),
    ('long string delimiter', 'print([=x',
     't.kp:1:7: error: invalid long string delimiter\nprint([=x\n      ^'),
    ('unfinished after backslash-newline', 'var s = "a\\\nb',
     't.kp:1:9: error: unfinished string\nvar s = "a\\\n        ^'),
]


@pytest.mark.parametrize(("name", "source", "expected"), CASES, ids=[c[0] for c in CASES])
def test_golden_error(name, source, expected):
    with pytest.raises(CompileError) as info:
        compile_source(source, "t.kp")
    assert info.value.render() == expected
    assert str(info.value) == expected


def test_several_semantic_errors_are_reported_in_order():
    source = "print(a)\nb = 1\nprint(len())\n"
    with pytest.raises(CompileError) as info:
        compile_source(source, "many.kp")
    messages = [(d.span.line, d.message) for d in info.value.diagnostics]
    assert messages == [
        (1, "unknown name 'a'"),
        (2, "assignment to undeclared variable 'b' (declare it first: var b)"),
        (3, "wrong number of arguments to 'len': expected 1, got 0"),
    ]
    assert info.value.render().count(": error: ") == 3


def test_diagnostic_fields():
    with pytest.raises(CompileError) as info:
        compile_source("var x = 1\nprint(y)", "f.kp")
    (d,) = info.value.diagnostics
    assert (d.span.line, d.span.col, d.span.end_line, d.span.end_col) == (2, 7, 2, 8)
    assert d.severity == "error"
    assert info.value.filename == "f.kp"


def test_default_filename_is_command_line():
    with pytest.raises(CompileError) as info:
        compile_source("print(q)")
    assert info.value.render().startswith("(command line):1:7: error: unknown name 'q'")


def test_crlf_source_positions():
    with pytest.raises(CompileError) as info:
        compile_source("print(1)\r\nprint(zz)\r\n", "t.kp")
    assert info.value.render() == "t.kp:2:7: error: unknown name 'zz'\nprint(zz)\n      ^~"


def test_syntax_errors_in_several_statements_are_all_reported():
    source = "if x { }\nfunction f() {\n  print(1 +)\n}\ntrace a:b print(1)\nvar ok = 1\n"
    with pytest.raises(CompileError) as info:
        compile_source(source, "t.kp")
    assert [(d.span.line, d.message) for d in info.value.diagnostics] == [
        (1, "expected '(' after 'if': conditions take parentheses"),
        (3, "unexpected ')'; expected an expression"),
        (5, "expected '{' to start the block of 'trace' (or ',' before another event), "
            "found 'print(1)'"),
    ]


def test_a_missing_brace_gives_one_error_not_a_cascade():
    source = "function f() {\n  print(1)\n\nvar x = 1\nif (x) { print(x) }\n"
    with pytest.raises(CompileError) as info:
        compile_source(source, "t.kp")
    assert [d.message for d in info.value.diagnostics] == [
        "unexpected end of the script: expected '}' to close a block"]


def test_unexpected_brace_inside_a_call():
    with pytest.raises(CompileError) as info:
        compile_source("function f() {\n print(1\n}", "t.kp")
    assert info.value.diagnostics[0].message == "unexpected '}'; expected ')'"


def test_later_syntax_errors_keep_their_positions_with_crlf():
    source = "if x { }\r\nvar y = 1\r\nwhile z { }\r\n"
    with pytest.raises(CompileError) as info:
        compile_source(source, "t.kp")
    assert [(d.span.line, d.span.col) for d in info.value.diagnostics] == [(1, 4), (3, 7)]
