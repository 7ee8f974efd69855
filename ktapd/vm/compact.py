"""One-line forms of the translation templates, for very large functions.

CPython's compiler needs tens of kilobytes and ~20 us for every line of
generated source, so a function of tens of thousands of instructions
translated with the inline templates (up to a dozen lines each) would take
gigabytes and many seconds to load.  For a program of more than
``COMPACT_THRESHOLD`` instructions translate.py uses these helpers instead:
every instruction becomes one line calling a function here, which does the
full checks itself.  Same semantics, slower per instruction, bounded load
cost (with the verifier's size caps: about 2 s and 0.35 GB at worst).

The call helper needs the program's namespace (it updates the shared step
budget S), so the machine makes it with ``make_call``.  Must
not import the machine, the probes or anything outside the VM's values.
"""

from __future__ import annotations

from types import FunctionType

from ktapd.vm.values import (
    KtapError,
    Table,
    arith_error,
    compare_error,
    table_full,
    table_key,
    type_name,
    wrap,
)
from protocol.limits import INT64_MAX, INT64_MIN

COMPACT_THRESHOLD = 2048  # instructions in the whole program


def not_table(value: object) -> None:
    raise KtapError(f"attempt to index a {type_name(value)} value")


def not_function(value: object) -> None:
    raise KtapError(f"attempt to call a {type_name(value)} value")


def gettable(t: object, k: object) -> object:
    if t.__class__ is not Table:
        not_table(t)
    return t.d.get(table_key(k))


def settable(t: object, k: object, v: object, name: str | None) -> None:
    if t.__class__ is not Table:
        not_table(t)
    k = table_key(k)
    d = t.d
    if v is None:
        d.pop(k, None)
        return
    if len(d) >= t.limit and k not in d:
        table_full(t, name)
    d[k] = v


def addtable(t: object, k: object, v: object, name: str | None) -> None:
    if t.__class__ is not Table:
        not_table(t)
    k = table_key(k)  # a nil key is reported before a bad value, as inline
    if v.__class__ is not int:
        arith_error(v)
    d = t.d
    old = d.get(k)
    if old.__class__ is not int:
        if old is not None:
            arith_error(old)
        if len(d) >= t.limit:
            table_full(t, name)
        old = 0
    total = old + v
    d[k] = total if INT64_MIN <= total <= INT64_MAX else wrap(total)


def add(a: object, b: object) -> int:
    if a.__class__ is not int or b.__class__ is not int:
        arith_error(a, b)
    r = a + b
    return r if INT64_MIN <= r <= INT64_MAX else wrap(r)


def sub(a: object, b: object) -> int:
    if a.__class__ is not int or b.__class__ is not int:
        arith_error(a, b)
    r = a - b
    return r if INT64_MIN <= r <= INT64_MAX else wrap(r)


def mul(a: object, b: object) -> int:
    if a.__class__ is not int or b.__class__ is not int:
        arith_error(a, b)
    r = a * b
    return r if INT64_MIN <= r <= INT64_MAX else wrap(r)


def neg(a: object) -> int:
    if a.__class__ is not int:
        arith_error(a)
    return wrap(-a) if a == INT64_MIN else -a


def lt(a: object, b: object) -> bool:
    if a.__class__ is not int or b.__class__ is not int:
        compare_error(a, b)
    return a < b


def le(a: object, b: object) -> bool:
    if a.__class__ is not int or b.__class__ is not int:
        compare_error(a, b)
    return a <= b


def int64(value: object) -> object:
    """An event value, with integers wider than int64 wrapped."""
    if value.__class__ is int and not INT64_MIN <= value <= INT64_MAX:
        return wrap(value)
    return value


def make_call(ns: dict, tail_class: type, call_depth: int, budget_exceeded, stack_overflow):
    """CALL as one function: depth and step accounting, trampoline for tail calls."""

    def call(f: object, args: tuple, depth: int) -> object:
        if f.__class__ is not FunctionType:
            not_function(f)
        if depth >= call_depth:
            stack_overflow()
        steps = ns["S"] = ns["S"] - 1
        if steps < 0:
            budget_exceeded()
        result = f(*args, _depth=depth + 1)
        while result.__class__ is tail_class:
            steps = ns["S"] = ns["S"] - 1
            if steps < 0:
                budget_exceeded()
            result = result.f(*result.a, _depth=depth + 1)
        return result

    return call


def make_tail(tail_class: type):
    def tail(f: object, args: tuple) -> object:
        if f.__class__ is not FunctionType:
            not_function(f)
        return tail_class(f, args)

    return tail
