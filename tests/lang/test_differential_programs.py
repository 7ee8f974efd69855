"""Random programs: compiled code on the VM prints what a tree-walking model prints.

The model below interprets the compiler's own AST directly, with the
scoping rules of LANGUAGE.md (block-scoped ``var``, redeclaration makes a
new variable, closures share variables, each loop iteration has fresh
locals) and Lua-style value semantics.  Programs are built from a small
statement grammar over a fixed set of names, so they exercise register
allocation, boxing of captured locals, upvalues, multiple assignment and
loops together.  Any disagreement is a bug in codegen, the verifier
or the VM.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lang_harness import vm_available

from ktapctl.lang import ast, compile_source, parse

pytestmark = pytest.mark.skipif(not vm_available(), reason="ktapd.vm is not available")


class ModelError(Exception):
    pass


class Recursion(Exception):
    """Deep recursion (g calling itself): where exactly the VM stops is its
    business, so such programs are not compared."""


class Broke(Exception):
    pass


class Returned(Exception):
    def __init__(self, value):
        self.value = value


class Cell:
    def __init__(self, value=None):
        self.value = value


class Closure:
    def __init__(self, fn: ast.FunctionExpr, env: list[dict]):
        # A closure sees the variables in scope where it was made (names
        # declared later in the same block are other variables), sharing
        # their cells.
        self.fn, self.env = fn, [dict(scope) for scope in env]


def mkey(v):
    """A model table key: 1 and true are different keys (Python thinks 1 == True)."""
    if v is None:
        raise ModelError("nil key")
    if isinstance(v, dict | Closure):
        return ("ref", id(v))
    return (type(v).__name__, v)


def wrap(n: int) -> int:
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


def truthy(v) -> bool:
    return v is not None and v is not False


def number(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ModelError("arith")
    return v


def show(v) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "TABLE"
    if isinstance(v, Closure):
        return "FUNCTION"
    return str(v)


class Model:
    def __init__(self):
        self.out: list[str] = []
        self.steps = 0
        self.depth = 0

    def step(self):
        self.steps += 1
        if self.steps > 50_000:
            raise ModelError("budget")

    def lookup(self, env, name) -> Cell:
        for scope in reversed(env):
            if name in scope:
                return scope[name]
        raise AssertionError(f"unresolved {name}")

    def block(self, stats, env):
        env = env + [{}]
        for s in stats:
            self.stat(s, env)

    def stat(self, s, env):
        if isinstance(s, ast.Local):
            values = [self.eval(v, env) for v in s.values]
            for i, p in enumerate(s.names):
                env[-1][p.name] = Cell(values[i] if i < len(values) else None)
        elif isinstance(s, ast.Assign):
            places = [self.place(t, env) for t in s.targets]
            values = [self.eval(v, env) for v in s.values]
            values += [None] * (len(places) - len(values))
            for place, value in zip(places, values, strict=False):
                self.store(place, value)
        elif isinstance(s, ast.AddAssign):
            place = self.place(s.target, env)
            value = number(self.eval(s.value, env))
            if place[0] == "cell":
                place[1].value = wrap(number(place[1].value) + value)
            else:
                table, key = place[1], place[2]
                old = table.get(key)
                table[key] = wrap((0 if old is None else number(old)) + value)
        elif isinstance(s, ast.ExprStat):
            self.eval(s.expr, env)
        elif isinstance(s, ast.If):
            for test, body in s.tests:
                if truthy(self.eval(test, env)):
                    self.block(body.stats, env)
                    return
            if s.orelse is not None:
                self.block(s.orelse.stats, env)
        elif isinstance(s, ast.ForNum):
            start, stop = number(self.eval(s.start, env)), number(self.eval(s.stop, env))
            step = 1 if s.step is None else number(self.eval(s.step, env))
            i = start
            while (i <= stop) if step > 0 else (i >= stop):
                self.step()
                try:
                    self.block(s.body.stats, env + [{s.var.name: Cell(i)}])
                except Broke:
                    break
                i += step
        elif isinstance(s, ast.While):
            while truthy(self.eval(s.test, env)):
                self.step()
                try:
                    self.block(s.body.stats, env)
                except Broke:
                    break
        elif isinstance(s, ast.Break):
            raise Broke
        elif isinstance(s, ast.Return):
            raise Returned(None if s.value is None else self.eval(s.value, env))
        elif isinstance(s, ast.LocalFunction):
            cell = Cell()
            env[-1][s.name.name] = cell
            cell.value = Closure(s.func, env)
        else:
            raise AssertionError(type(s))

    def place(self, t, env):
        if isinstance(t, ast.Name):
            return ("cell", self.lookup(env, t.name))
        table = self.eval(t.obj, env)
        key = self.eval(t.key, env) if isinstance(t, ast.Index) else t.name
        if not isinstance(table, dict):
            raise ModelError("index")
        return ("table", table, mkey(key))

    def store(self, place, value):
        if place[0] == "cell":
            place[1].value = value
        elif value is None:
            place[1].pop(place[2], None)
        else:
            place[1][place[2]] = value

    def eval(self, e, env):
        if isinstance(e, ast.Number):
            return e.value
        if isinstance(e, ast.Bool):
            return e.value
        if isinstance(e, ast.Nil):
            return None
        if isinstance(e, ast.Name):
            return self.lookup(env, e.name).value
        if isinstance(e, ast.Table):
            table, position = {}, 0
            for f in e.fields:
                if f.key is None:
                    position += 1
                    key = position
                else:
                    key = self.eval(f.key, env)
                value = self.eval(f.value, env)
                if value is not None:
                    table[mkey(key)] = value
            return table
        if isinstance(e, ast.Index):
            table, key = self.eval(e.obj, env), self.eval(e.key, env)
            if not isinstance(table, dict):
                raise ModelError("index")
            return table.get(mkey(key))
        if isinstance(e, ast.FunctionExpr):
            return Closure(e, env)
        if isinstance(e, ast.Call):
            if isinstance(e.func, ast.Name) and e.func.name == "print":
                self.out.append("\t".join(show(self.eval(a, env)) for a in e.args))
                return None
            fn = self.eval(e.func, env)
            args = [self.eval(a, env) for a in e.args]
            if not isinstance(fn, Closure):
                raise ModelError("call")
            self.step()
            self.depth += 1
            if self.depth > 50:
                raise Recursion
            scope = {p.name: Cell(args[i] if i < len(args) else None)
                     for i, p in enumerate(fn.fn.params)}
            try:
                self.block(fn.fn.body.stats, fn.env + [scope])
            except Returned as r:
                return r.value
            finally:
                self.depth -= 1
            return None
        if isinstance(e, ast.Unary):
            v = self.eval(e.operand, env)
            return (not truthy(v)) if e.op == "not" else wrap(-number(v))
        if isinstance(e, ast.Binary):
            left = self.eval(e.left, env)
            if e.op == "and":
                return self.eval(e.right, env) if truthy(left) else left
            if e.op == "or":
                return left if truthy(left) else self.eval(e.right, env)
            right = self.eval(e.right, env)
            if e.op in ("eq", "ne"):
                same = type(left) is type(right) and (
                    left == right if not isinstance(left, dict | Closure) else left is right)
                return same if e.op == "eq" else not same
            x, y = number(left), number(right)
            return {"add": lambda: wrap(x + y), "sub": lambda: wrap(x - y),
                    "mul": lambda: wrap(x * y), "lt": lambda: x < y, "le": lambda: x <= y,
                    "gt": lambda: x > y, "ge": lambda: x >= y}[e.op]()
        raise AssertionError(type(e))


# --- program generator ------------------------------------------------------
NAMES = ["a", "b", "c"]
names = st.sampled_from(NAMES)
atoms = st.one_of(
    st.integers(min_value=-5, max_value=5).map(str),
    st.sampled_from(["9223372036854775807", "nil", "true", "false"]),
    names, names, st.sampled_from(["t[1]", "t[a]", "f(a)", "g()"]),
)
exprs = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "==", "!=", "<", ">=", "&&", "||"]),
                  inner).map(lambda p: f"({p[0]} {p[1]} {p[2]})"),
        inner.map(lambda e: f"!{e}"),
        st.tuples(inner, inner).map(lambda p: f"({{{p[0]}, {p[1]}}})[1]"),
        st.tuples(names, inner).map(lambda p: f"(function(x) {{ return x + {p[0]} }})({p[1]})"),
    ),
    max_leaves=6,
)
simple_stats = st.one_of(
    st.tuples(names, exprs).map(lambda p: f"{p[0]} = {p[1]}"),
    st.tuples(names, exprs).map(lambda p: f"var {p[0]} = {p[1]}"),
    st.tuples(names, names, exprs, exprs).map(lambda p: f"{p[0]}, {p[1]} = {p[2]}, {p[3]}"),
    st.tuples(names, exprs).map(lambda p: f"{p[0]} += {p[1]}"),
    st.tuples(exprs, exprs).map(lambda p: f"t[{p[0]}] = {p[1]}"),
    st.tuples(exprs, exprs).map(lambda p: f"t[{p[0]}] += {p[1]}"),
    st.lists(exprs, min_size=1, max_size=3).map(lambda es: f"print({', '.join(es)})"),
    st.tuples(names, exprs).map(lambda p: f"fs[{p[0]} == nil] = function() {{ return {p[1]} }}"),
    st.just("print(fs[true] && fs[true](), fs[false] && fs[false]())"),
)
stats = st.recursive(
    simple_stats,
    lambda inner: st.one_of(
        st.tuples(exprs, st.lists(inner, max_size=3), st.lists(inner, max_size=2)).map(
            lambda p: f"if ({p[0]}) {{ {'; '.join(p[1])} }} else {{ {'; '.join(p[2])} }}"),
        st.tuples(names, st.integers(0, 3), st.lists(inner, max_size=3)).map(
            lambda p: f"for ({p[0]} = 1, {p[1]}) {{ {'; '.join(p[2])} }}"),
        st.tuples(names, st.lists(inner, max_size=3)).map(
            lambda p: f"g = function() {{ {'; '.join(p[1])}; return {p[0]} }}"),
        st.tuples(exprs, st.lists(inner, max_size=3)).map(
            lambda p: f"var w = 0; while (w < 3) {{ w += 1; if ({p[0]}) {{ break }} "
                      f"{'; '.join(p[1])} }}"),
        st.tuples(names, exprs, st.lists(inner, max_size=3)).map(
            lambda p: f"for ({p[0]} = 3, 1, -1) {{ if ({p[1]}) {{ break }} {'; '.join(p[2])} }}"),
    ),
    max_leaves=8,
)

PRELUDE = (
    "var a = 1; var b = 2; var c = 3; var t = {}; var fs = {}\n"
    "function f(x) { return x }\n"
    "var g = function() { return 0 }\n"
)


def run_vm(source: str) -> tuple[list[str], bool]:
    from ktapd.verifier import verify
    from ktapd.vm import Machine
    from protocol.records import Error, Text

    records: list = []
    Machine(verify(compile_source(source, "gen.kp")), emit=records.append).run_main(["gen.kp"])
    text = "".join(r.text for r in records if isinstance(r, Text))
    text = re.sub(r"table 0x[0-9a-f]+", "TABLE", text)
    text = re.sub(r"function 0x[0-9a-f]+", "FUNCTION", text)
    lines = text.split("\n")[:-1]
    return lines, any(isinstance(r, Error) for r in records)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(stats, min_size=1, max_size=6))
def test_program_matches_model(body):
    source = PRELUDE + "\n".join(body) + "\nprint(a, b, c, t[1], t[a])\n"
    model = Model()
    failed = False
    try:
        model.block(parse(source).body.stats, [])
    except ModelError:
        failed = True
    except Returned:
        pass
    except Recursion:
        assume(False)
    lines, vm_failed = run_vm(source)
    assert vm_failed == failed, source
    assert lines == model.out, source
