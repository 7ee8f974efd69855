"""Random expressions: compiled code on the VM agrees with a Python model.

The model below is LANGUAGE.md's semantics written directly in Python
(int64 wrap-around, truncating division, C remainder, Lua-style && and ||,
type-strict ==).  Expressions mix constants with locals, captured locals
and table entries, so register allocation, boxing and upvalues are all on
the path.  A model error (divide by zero, arithmetic on a boolean...) must
be a run-time error on the VM too.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lang_harness import vm_available

from ktapctl.lang import compile_source
from protocol.records import Error, Text

pytestmark = pytest.mark.skipif(not vm_available(), reason="ktapd.vm is not available")

ENV = {"a": 7, "b": -3, "c": 2**63 - 1, "d": 0}  # d is captured, t[1] holds b


class ModelError(Exception):
    pass


def wrap(n: int) -> int:
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


def number(v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise ModelError
    return v


def evaluate(e):
    kind = e[0]
    if kind == "lit":
        return e[1]
    if kind == "var":
        return ENV[e[1]] if e[1] != "t1" else ENV["b"]
    if kind == "not":
        v = evaluate(e[1])
        return v is None or v is False
    if kind == "neg":
        return wrap(-number(evaluate(e[1])))
    op, left = e[1], evaluate(e[2])
    if op == "&&":
        return evaluate(e[3]) if left is not None and left is not False else left
    if op == "||":
        return left if left is not None and left is not False else evaluate(e[3])
    right = evaluate(e[3])
    if op == "==":
        return type(left) is type(right) and left == right
    if op == "!=":
        return not (type(left) is type(right) and left == right)
    x, y = number(left), number(right)
    if op in ("<", "<=", ">", ">="):
        return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
    if op in ("/", "%"):
        if y == 0:
            raise ModelError
        q = abs(x) // abs(y) * (1 if (x >= 0) == (y >= 0) else -1)
        return wrap(q) if op == "/" else wrap(x - q * y)
    return wrap({"+": x + y, "-": x - y, "*": x * y}[op])


def source(e) -> str:
    kind = e[0]
    if kind == "lit":
        v = e[1]
        return {None: "nil", True: "true", False: "false"}.get(v, str(v)) if not (
            isinstance(v, int) and not isinstance(v, bool)) else f"({v})"
    if kind == "var":
        return "t[1]" if e[1] == "t1" else e[1]
    if kind == "not":
        return f"!({source(e[1])})"
    if kind == "neg":
        return f"-({source(e[1])})"
    return f"({source(e[2])} {e[1]} {source(e[3])})"


def show(v) -> str:
    return {None: "nil", True: "true", False: "false"}.get(v, str(v)) if (
        v is None or isinstance(v, bool)) else str(v)


leaves = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda n: ("lit", n)),
    st.sampled_from([0, 1, -1, 2, 3]).map(lambda n: ("lit", n)),
    st.sampled_from([None, True, False]).map(lambda v: ("lit", v)),
    st.sampled_from(["a", "b", "c", "d", "t1"]).map(lambda n: ("var", n)),
)
expressions = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.tuples(st.just("bin"), st.sampled_from(
            ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||"]), inner, inner),
        st.tuples(st.just("not"), inner),
        st.tuples(st.just("neg"), inner),
    ),
    max_leaves=10,
)


def run(src: str) -> list:
    from ktapd.verifier import verify
    from ktapd.vm import Machine

    records: list = []
    machine = Machine(verify(compile_source(src, "diff.kp")), emit=records.append)
    machine.run_main(["diff.kp"])
    return records


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions)
def test_expression_matches_model(e):
    try:
        expected = show(evaluate(e))
    except ModelError:
        expected = None
    text = source(e)
    # the same expression in the main chunk and inside a closure
    src = (f"var a = {ENV['a']}\nvar b = {ENV['b']}\nvar c = {ENV['c']}\nvar d = {ENV['d']}\n"
           f"var t = {{b}}\nvar keep = function() {{ return d }}\n"
           f"print({text})\nvar f = function() {{ return {text} }}\nprint(f())\n")
    records = run(src)
    if expected is None:
        assert any(isinstance(r, Error) for r in records), (text, records)
    else:
        assert all(isinstance(r, Text) for r in records), (text, records)
        assert "".join(r.text for r in records) == f"{expected}\n{expected}\n", text
