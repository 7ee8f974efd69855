"""Any text compiles to a verifiable program or fails with CompileError: never a crash.

Hypothesis builds sources from ktap's own vocabulary (so they get past the
lexer often and reach the parser, resolver and codegen), plus raw text.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ktapctl.lang import CompileError, compile_source
from ktapd.verifier import verify
from protocol.bytecode import decode, encode

WORDS = [
    "var", "x", "y", "t", "f", "function", "(", ")", "{", "}", "[", "]", "=", "+=", "<<<",
    "if", "elseif", "else", "while", "for", "in", "pairs", "break", "return", "trace",
    "trace_end", "tick-1s", "profile-10ms", "sched:a", "/x/", "1", "0x10", "'s'", "[[l]]",
    "nil", "true", "false", ",", ";", ".", "..", "+", "-", "*", "/", "%", "==", "!=", "<",
    "<=", ">", ">=", "&&", "||", "!", "print", "len", "table.new", "argstr", "arg0", "pid",
    "args.f", "arg", "\n", "#c\n", "--c\n",
]


def check(source: str) -> None:
    try:
        program = compile_source(source, "fuzz.kp")
    except CompileError as exc:
        assert exc.diagnostics
        exc.render()
        return
    verify(decode(encode(program)), admin=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(WORDS), max_size=40))
def test_token_soup(words):
    check(" ".join(words))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_raw_text(text):
    check(text)


# Well-formed programs built from a small grammar must always compile.
_names = st.sampled_from(["a", "b", "c"])
_atoms = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.sampled_from(["nil", "true", "false", "'s'", "a", "b", "c", "t[1]", "t.k", "len(t)"]),
)
_exprs = st.recursive(
    _atoms,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%", "..", "==", "!=", "<",
                                          "<=", ">", ">=", "&&", "||"]), inner).map(
            lambda p: f"({p[0]} {p[1]} {p[2]})"),
        inner.map(lambda e: f"!{e}"),
        inner.map(lambda e: f"-({e})"),
        st.lists(inner, max_size=3).map(lambda es: "{" + ", ".join(es) + "}"),
        st.tuples(inner, inner).map(lambda p: f"(function(a) {{ return {p[0]} }})({p[1]})"),
    ),
    max_leaves=12,
)
_stats = st.recursive(
    st.one_of(
        st.tuples(_names, _exprs).map(lambda p: f"{p[0]} = {p[1]}"),
        st.tuples(_names, _exprs).map(lambda p: f"var {p[0]} = {p[1]}"),
        _exprs.map(lambda e: f"t[{e}] += 1"),
        _exprs.map(lambda e: f"t[1] <<< {e}"),
        _exprs.map(lambda e: f"print({e})"),
    ),
    lambda inner: st.one_of(
        st.tuples(_exprs, st.lists(inner, max_size=3)).map(
            lambda p: f"if ({p[0]}) {{ {'; '.join(p[1])} }} else {{ }}"),
        st.lists(inner, max_size=3).map(lambda b: f"while (a) {{ {'; '.join(b)}; break }}"),
        st.lists(inner, max_size=3).map(lambda b: f"for (i = 1, 3) {{ {'; '.join(b)} }}"),
        st.lists(inner, max_size=3).map(lambda b: f"for (k, v in pairs(t)) {{ {'; '.join(b)} }}"),
        st.lists(inner, max_size=3).map(lambda b: f"var g = function() {{ {'; '.join(b)} }}"),
    ),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    _stats,
    # probes only at the top level: registering is for the main chunk
    st.lists(_stats, max_size=3).map(lambda b: f"tick-1s {{ {'; '.join(b)} }}"),
    st.lists(_stats, max_size=3).map(lambda b: f"trace a:b /x/ {{ {'; '.join(b)} }}"),
), max_size=8))
def test_well_formed_programs_compile_and_verify(stats):
    source = "var a = 1; var b = 2; var c = 3; var t = {}\n" + "\n".join(stats)
    program = compile_source(source, "gen.kp")
    verify(decode(encode(program)), admin=True)
