"""Differential properties: VM arithmetic against exact rational arithmetic,
printf against the C library's snprintf."""

from __future__ import annotations

import ctypes
import ctypes.util
from fractions import Fraction
from math import trunc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ktap_asm import K, main_fn, prog
from vmrun import start

from protocol.limits import INT64_MAX, INT64_MIN

int64 = st.one_of(st.integers(INT64_MIN, INT64_MAX),
                  st.sampled_from([0, 1, -1, 2, -2, INT64_MAX, INT64_MIN, INT64_MAX - 1]))


def wrap(x: int) -> int:
    return (x + 2**63) % 2**64 - 2**63


REFERENCE = {
    "ADD": lambda a, b: wrap(a + b),
    "SUB": lambda a, b: wrap(a - b),
    "MUL": lambda a, b: wrap(a * b),
    "DIV": lambda a, b: wrap(trunc(Fraction(a, b))),
    "MOD": lambda a, b: wrap(a - b * trunc(Fraction(a, b))),
    "LT": lambda a, b: a < b,
    "LE": lambda a, b: a <= b,
    "EQ": lambda a, b: a == b,
}


def evaluate(opname: str, a: int, b: int):
    """Run `print(a OP b)` as bytecode; return the printed text."""
    main = main_fn([("LOADK", 1, K(a)), ("LOADK", 2, K(b)), (opname, 3, 1, 2),
                    ("CALLB", 4, "print", 3, 1), ("RETURN0",)])
    run = start(prog(main))
    return run.text() if run.ok else run.errors()[0].message


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(REFERENCE)), int64, int64)
def test_arithmetic_matches_exact_arithmetic(opname, a, b):
    if opname in ("DIV", "MOD") and b == 0:
        assert evaluate(opname, a, b) == "divide 0"
        return
    expected = REFERENCE[opname](a, b)
    shown = ("true" if expected else "false") if isinstance(expected, bool) else str(expected)
    assert evaluate(opname, a, b) == shown + "\n"


@settings(max_examples=200, deadline=None)
@given(int64)
def test_negation_wraps(a):
    main = main_fn([("LOADK", 1, K(a)), ("NEG", 2, 1), ("CALLB", 3, "print", 2, 1), ("RETURN0",)])
    assert start(prog(main)).text() == f"{wrap(-a)}\n"


_libc_path = ctypes.util.find_library("c")
libc = ctypes.CDLL(_libc_path) if _libc_path else None


def c_format(fmt: str, value) -> str:
    buf = ctypes.create_string_buffer(512)
    arg = ctypes.c_longlong(value) if isinstance(value, int) else ctypes.c_char_p(value.encode())
    n = libc.snprintf(buf, 512, fmt.encode(), arg)
    return buf.raw[:n].decode("latin-1")


@pytest.mark.skipif(libc is None, reason="no C library to compare with")
@settings(max_examples=600, deadline=None)
@given(flags=st.lists(st.sampled_from("-+ #0"), max_size=3, unique=True).map("".join),
       width=st.one_of(st.none(), st.integers(0, 25)),
       precision=st.one_of(st.none(), st.integers(0, 25)),
       conv=st.sampled_from("diouxXcs"),
       number=int64,
       text=st.text(alphabet="abcdefghij ", max_size=12))
def test_printf_matches_the_c_library(flags, width, precision, conv, number, text):
    if conv == "c":
        number = number & 0x7F or 65  # a NUL would end the C string
        if precision is not None:
            precision = None  # undefined in C for %c
    if conv == "s" and "0" in flags:
        flags = flags.replace("0", "")  # undefined in C for %s
    spec = "%" + flags + ("" if width is None else str(width))
    spec += "" if precision is None else "." + str(precision)
    value = text if conv == "s" else number
    c_spec = spec + ("ll" if conv in "diouxX" else "") + conv
    main = main_fn([("LOADK", 1, K(spec + conv)), ("LOADK", 2, K(value)),
                    ("CALLB", 3, "printf", 1, 2), ("RETURN0",)])
    assert start(prog(main)).text() == c_format(c_spec, value)


def _script_output(source: str) -> str:
    lang = pytest.importorskip("ktapctl.lang")
    run = start(lang.compile_source(source, "t.kp"))
    return run.text() if run.ok else run.errors()[0].message


@settings(max_examples=150, deadline=None)
@given(st.integers(INT64_MIN, INT64_MAX - 2), int64, int64)
def test_loop_arithmetic_wraps_whatever_the_signs(start_value, k, first):
    # The translator drops overflow tests that operand signs rule out (a
    # loop variable counting up from a non-negative start, constants); the
    # loop variable is also read after an inner block.
    source = (f"var t = {{}}\nt[1] = {first}\nvar k = {k}\n"
              f"for (i = {start_value}, {start_value} + 2) {{\n"
              f"  if (i == 0) {{ print(\"zero\") }}\n"
              f"  print(i + {k}, i - {k}, {k} - i, {k} + i, i + k, i - k, k - i)\n"
              f"  t[1] += i\n  print(t[1])\n}}\n"
              f"for (i = {start_value} + 2, {start_value}, -1) {{ print(i - {k}, i + {k}) }}\n")
    expected = ""
    total = first
    for i in range(start_value, start_value + 3):
        if i == 0:
            expected += "zero\n"
        row = (i + k, i - k, k - i, k + i, i + k, i - k, k - i)
        expected += "\t".join(str(wrap(x)) for x in row) + "\n"
        total = wrap(total + i)
        expected += f"{total}\n"
    for i in range(start_value + 2, start_value - 1, -1):
        expected += f"{wrap(i - k)}\t{wrap(i + k)}\n"
    assert _script_output(source) == expected
