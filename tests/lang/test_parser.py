"""Lexer and parser: tokens, event-spec splitting, the AST and its spans."""

from __future__ import annotations

import dataclasses
import time

import pytest

from ktapctl.lang import CompileError, ast, compile_source, parse
from ktapctl.lang.lexer import Lexer, parse_number


def tokens(source: str) -> list[tuple[str, str]]:
    return [(t.type, str(t)) for t in Lexer(source)]


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("10", 10), ("010", 8), ("0x10", 16), ("0XfF", 255),
    ("0x7fffffffffffffff", 2**63 - 1), ("0x8000000000000000", -(2**63)),
    ("0xffffffffffffffff", -1), ("18446744073709551615", -1),
    ("99999999999999999999999", -1),  # saturates like strtoul
])
def test_numbers(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["1.5", "1e3", "08", "0x", "1a", "0x1g", "1_000"])
def test_malformed_numbers(text):
    assert parse_number(text) is None


def test_event_specs_are_raw_text_split_on_commas():
    assert tokens("trace probe:/bin/bash:readline%return arg1=%ax, sched:* /a == 1/ { }") == [
        ("_TRACE", "trace"),
        ("EVENTSPEC", "probe:/bin/bash:readline%return arg1=%ax"),
        ("_COMMA", ","),
        ("EVENTSPEC", "sched:*"),
        ("FILTER", "a == 1"),
        ("_LBRACE", "{"),
        ("_RBRACE", "}"),
    ]


def test_tracepoint_filter_without_space():
    assert tokens("trace syscalls:sys_enter_open/dfd==1/{}")[1:3] == [
        ("EVENTSPEC", "syscalls:sys_enter_open"), ("FILTER", "dfd==1")]


def test_filter_may_hold_slashes():
    assert tokens('trace a:b /filename == "/tmp/x"/ { }')[2] == ("FILTER", 'filename == "/tmp/x"')


def test_events_across_lines():
    assert [t for t in tokens("trace sched:a,\n      sched:b\n{ }") if t[0] == "EVENTSPEC"] == [
        ("EVENTSPEC", "sched:a"), ("EVENTSPEC", "sched:b")]


def test_timer_interval_tokens():
    assert tokens("tick-1s { }")[:3] == [("_TICK", "tick"), ("_MINUS", "-"), ("INTERVAL", "1s")]
    assert tokens("profile - 100usec{")[:3] == [
        ("_PROFILE", "profile"), ("_MINUS", "-"), ("INTERVAL", "100usec")]


def test_keywords_and_event_variables():
    assert tokens("var x = argstr .. execname; if (args.f) {}")[:6] == [
        ("_VAR", "var"), ("NAME", "x"), ("_ASSIGN", "="), ("EVENTVAR", "argstr"),
        ("_CONCAT", ".."), ("EVENTVAR", "execname")]
    assert ("_ARGS", "args") in tokens("args.f")


def test_longest_punctuation_first():
    assert [t for t, _ in tokens("a <<< b <= c += d .. e")] == [
        "NAME", "_AGG", "NAME", "_LE", "NAME", "_PLUSEQ", "NAME", "_CONCAT", "NAME"]


def test_parse_gives_frozen_ast_with_spans():
    chunk = parse("var x = 1\nprint(x + 2)\n")
    assert isinstance(chunk, ast.Chunk)
    local, call = chunk.body.stats
    assert isinstance(local, ast.Local) and local.names[0].name == "x"
    assert isinstance(call, ast.ExprStat) and isinstance(call.expr, ast.Call)
    binary = call.expr.args[0]
    assert isinstance(binary, ast.Binary) and binary.op == "add"
    assert (binary.span.line, binary.span.col, binary.span.end_col) == (2, 7, 12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        binary.op = "sub"


def test_no_lark_types_in_the_ast():
    chunk = parse("trace a:b /x/ { s[1] <<< 2 }\nfunction f(a) { return {a, b = 2} }")

    def walk(node):
        assert "lark" not in type(node).__module__
        if dataclasses.is_dataclass(node):
            for f in dataclasses.fields(node):
                walk(getattr(node, f.name))
        elif isinstance(node, tuple):
            for item in node:
                walk(item)
        else:
            assert node is None or type(node) in (str, int, bool), type(node)

    walk(chunk)


def test_precedence_and_associativity():
    e = parse("var x = 1 || 2 && 3 == 4 .. 5 .. 6 + 7 * -8").body.stats[0].values[0]
    assert e.op == "or" and e.right.op == "and"
    cmp = e.right.right
    assert cmp.op == "eq"
    concat = cmp.right
    assert concat.op == "concat" and concat.right.op == "concat"  # right associative
    add = concat.right.right
    assert add.op == "add" and add.right.op == "mul"
    assert isinstance(add.right.right, ast.Number) and add.right.right.value == -8
    sub = parse("var y = 1 - 2 - 3").body.stats[0].values[0]
    assert sub.left.op == "sub"  # left associative


def test_call_on_the_next_line_continues_the_expression():
    # like Lua, "f\n(g)" is one call: statements cannot start with '('
    chunk = parse("var f = function(x) { return x }\nvar y = f\n(1)")
    assert isinstance(chunk.body.stats[1].values[0], ast.Call)


def test_parse_errors_are_compile_errors():
    with pytest.raises(CompileError):
        parse("if (")


def test_one_liner_compiles_in_a_few_milliseconds():
    compile_source("print(1)")  # builds or loads the parser tables once
    start = time.perf_counter()
    for _ in range(20):
        compile_source("trace syscalls:sys_enter_openat { print(execname, argstr) }")
    per_compile = (time.perf_counter() - start) / 20
    assert per_compile < 0.01, f"{per_compile * 1000:.1f} ms per one-liner"


def test_comments_between_event_specs():
    source = "trace sched:a, # the first\n  sched:b -- the second\n{ }"
    assert [t for t in tokens(source) if t[0] == "EVENTSPEC"] == [
        ("EVENTSPEC", "sched:a"), ("EVENTSPEC", "sched:b")]


def test_non_ascii_digits_and_letters_are_refused_cleanly():
    for source in ("var x = ²", "var é = 1"):
        with pytest.raises(CompileError) as info:
            compile_source(source)
        assert "unexpected character" in str(info.value)


@pytest.mark.parametrize("spec", [
    "syscalls:sys_enter_openat", "syscalls:sys_enter_*", "*:*", "sched:sched_[sw]*",
    "probe:do_sys_open", "probe:vfs*", "probe:do_sys_open+0x10", "probe:foo.isra.0%return",
    "probe:do_sys_open dfd=%di filename=+0(%si):string", "probe:vfs_read%return fd=$retval",
    "probe:/bin/bash:readline", "probe:/lib64/libc.so.6:0x82000%return",
    "probe:/lib64/libc.so.6:pthread_mutex_*", "sdt:/lib64/libc.so.6:setjmp", "sdt:/x/y:*",
    "ftrace:function",
])
def test_valid_event_specs(spec):
    from ktapctl.lang.events import check_event_spec

    assert check_event_spec(spec) is None


@pytest.mark.parametrize("spec", [
    "syscalls", "a:b:c", "probe:", "probe:/bin/bash", "probe:/bin/bash:", "probe:foo%entry",
    "probe:/bin/bash:12ab", "sdt:bash:x", "sdt:/bin/bash", "ftrace:functions",
    "sched:switch%return", "a b:c",
])
def test_invalid_event_specs(spec):
    from ktapctl.lang.events import check_event_spec

    assert check_event_spec(spec) is not None


@pytest.mark.parametrize(("text", "ns"), [
    ("1s", 10**9), ("2sec", 2 * 10**9), ("100ms", 10**8), ("5msec", 5 * 10**6),
    ("10us", 10_000), ("7usec", 7_000),
])
def test_intervals(text, ns):
    from ktapctl.lang.events import parse_interval

    assert parse_interval(text) == (ns, None)


@pytest.mark.parametrize("text", ["1m", "1ns", "s", "0ms", "1.5s", "-1s", "10", "99999999999999s"])
def test_bad_intervals(text):
    from ktapctl.lang.events import parse_interval

    period, message = parse_interval(text)
    assert period == 0 and message
