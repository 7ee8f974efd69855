"""run_handler's inline handler bodies (translate.py) against calling the
handler closure: same output, same errors and lines, same budgets.

Every script below runs twice: with the registrations as the machine made
them (inline copies) and with each registration forced onto the generic
path (``inline=0``: call the closure).  The records must be identical.
"""

from __future__ import annotations

import dataclasses

import pytest
from ktap_asm import TICK, TRACE, K, fn, main_fn, prog
from vmrun import EVENT, script, start

from ktapd.vm import FakeEvent, translate
from protocol.limits import RuntimeLimits
from protocol.records import Error

pytest.importorskip("ktapctl.lang")

OTHER = FakeEvent(probename="sys_enter_read", pid=7, tid=8, execname="zsh", args=(3, 0, 4096),
                  fields={"fd": 3}, time_ns=2_000_000_000)

HANDLERS = {
    "count": "var s = {}\ntrace syscalls:sys_enter_openat { s[execname] += 1 }\n"
             "trace_end { for (k, v in pairs(s)) { print(k, v) } }",
    "counter": "var n = 0\ntrace syscalls:sys_enter_openat { n += 1 }\ntrace_end { print(n) }",
    "loop": "var t = 0\ntrace syscalls:sys_enter_openat { var x = 0\n for (i = 1, 10) { x += i }\n"
            " t += x }\ntrace_end { print(t) }",
    "printf": "trace syscalls:sys_enter_openat { printf(\"%s %d %d\\n\", execname, pid, arg0) }",
    "call": "var n = 0\nfunction inc(x) { return x + 1 }\n"
            "trace syscalls:sys_enter_openat { n = inc(n)\n print(n) }",
    "tail call": "function f(n) { if (n == 0) { print(\"done\") return 0 } return f(n - 1) }\n"
                 "trace syscalls:sys_enter_openat { return f(50) }",
    "tail call budget": "function f(n) { if (n == 0) { return 0 } return f(n - 1) }\n"
                        "trace syscalls:sys_enter_openat { return f(5000) }",
    "recursion": "function f(n) { if (n == 0) { return 0 } return 1 + f(n - 1) }\n"
                 "trace syscalls:sys_enter_openat { print(f(150)) }",
    "overflow": "function f(n) { if (n == 0) { return 0 } return 1 + f(n - 1) }\n"
                "trace syscalls:sys_enter_openat { print(f(199)) }",
    "endless": "trace syscalls:sys_enter_openat { while (true) { } }",
    "long loop": "trace syscalls:sys_enter_openat { var n = 0\n for (i = 1, 5000) { n += i }\n"
                 " print(n) }",
    "error line": "var t = {}\ntrace syscalls:sys_enter_openat {\n  t[pid] = 1\n"
                  "  print(1 / (pid - 42))\n}",
    "type error": "var s = {}\ntrace syscalls:sys_enter_openat { s[execname] = \"x\"\n"
                  " s[execname] += 1 }",
    "table full": "var s = {}\ntrace syscalls:sys_enter_openat { s[pid] += 1\n s[tid] += 1 }",
    "exit": "var n = 0\ntrace syscalls:sys_enter_openat { n += 1\n print(n)\n exit()\n print(\"no\") }\n"
            "trace_end { print(\"end\", n) }",
    "event vars": "trace syscalls:sys_enter_openat { print(probename, pid, tid, cpu, uid, execname,"
                  " arg1, argstr) }",
    "closures": "var total = 0\ntrace syscalls:sys_enter_openat { var mine = pid\n"
                " function add(x) { mine += x\n total += x\n return mine }\n"
                " print(add(1), add(2), total) }",
    "print_hist": "var s = {}\ntrace syscalls:sys_enter_openat { s[execname] += 1\n"
                  " for (i = 1, 3) { print_hist(s) } }",
    "two handlers": "var n = 0\ntrace syscalls:sys_enter_openat { n += 1 }\n"
                    "trace syscalls:sys_enter_openat { n += 10\n print(n) }",
    "nil event": "tick-1s { print(execname != nil) }",
    "nil event field": "tick-1s { print(arg0) }",
}


def fire_all(run, events) -> list:
    results = []
    for event in events:
        for reg in run.machine.registrations:
            results.append(run.machine.run_handler(reg, event))
    results.append(run.machine.run_end())
    return results


def generic(run) -> None:
    """Send every registration through run_handler's generic path."""
    regs = run.machine.registrations
    regs[:] = [dataclasses.replace(reg, inline=0, cells=()) for reg in regs]


def _unlocated(records: list) -> list:
    return [dataclasses.replace(r, line=0) if isinstance(r, Error) else r for r in records]


@pytest.mark.parametrize("name", sorted(HANDLERS))
def test_inline_bodies_do_what_the_handler_does(name, translation_mode):
    limits = RuntimeLimits(handler_steps=1000, table_entries=2)
    events = [EVENT, OTHER, EVENT, None]
    inline = script(HANDLERS[name], limits=limits)
    called = script(HANDLERS[name], limits=limits)
    assert inline.ok and called.ok
    if translation_mode == "inline":
        assert all(reg.inline for reg in inline.machine.registrations)
    generic(called)
    assert fire_all(inline, events) == fire_all(called, events)
    assert inline.records, "every script here says something"
    if name == "tail call budget" and translation_mode == "inline":
        # Only difference: the generic path runs the handler's tail call
        # after the handler's frame is gone, so it cannot name the line;
        # the inline body can (the `return f(5000)`).
        assert [r.line for r in inline.errors()] == [2]
        assert [r.line for r in called.errors()] == [0]
        assert _unlocated(inline.records) == _unlocated(called.records)
    else:
        assert inline.records == called.records


def test_each_registration_of_a_closure_uses_its_own_cells():
    # main: for i = 1..3 { var v = i; trace { print(v) } } in bytecode: a
    # fresh cell per pass, the same function registered three times.
    main = main_fn([("LOADK", 1, K(1)), ("LOADK", 2, K(3)), ("LOADK", 3, K(1)),
                    ("FORNUM", 4, 1, 2, 3), ("NEWBOX", 5), ("SETBOX", 5, 4),
                    ("CLOSURE", 6, 1), ("REGISTER", 0, 6), ("END",), ("RETURN0",)],
                   boxed=(5,))
    handler = fn([("GETUPVAL", 0, 0), ("CALLB", 1, "print", 0, 1), ("RETURN0",)],
                 upvalues=[(0, 5, "v")], name="handler")
    run = start(prog(main, handler, probes=[TRACE]))
    assert run.ok and len(run.machine.registrations) == 3
    for reg in run.machine.registrations:
        assert run.machine.run_handler(reg, EVENT)
    assert run.text() == "1\n2\n3\n"


def test_a_handler_registered_some_other_way_is_called():
    # The closure reaches REGISTER through a MOVE: no inline copy, same result.
    main = main_fn([("CLOSURE", 1, 1), ("MOVE", 2, 1), ("REGISTER", 0, 2), ("RETURN0",)])
    handler = fn([("EVAR", 0, "pid"), ("CALLB", 1, "print", 0, 1), ("RETURN0",)], name="h")
    run = start(prog(main, handler, probes=[TRACE]))
    assert run.ok and run.machine.registrations[0].inline == 0
    assert run.fire(EVENT) and run.text() == "42\n"


def test_handlers_past_the_inline_cap_are_called():
    count = translate.MAX_INLINE_HANDLERS + 3
    source = "var n = 0\n" + "".join(
        f"trace syscalls:sys_enter_openat {{ n += {i}\n print(n) }}\n" for i in range(count))
    run = script(source)
    regs = run.machine.registrations
    assert len(regs) == count
    assert sum(1 for reg in regs if reg.inline) <= translate.MAX_INLINE_HANDLERS
    for reg in regs:
        assert run.machine.run_handler(reg, EVENT)
    expected = [sum(range(i + 1)) for i in range(count)]
    assert run.text() == "".join(f"{n}\n" for n in expected)


def test_a_zero_call_depth_limit_holds_in_inline_handlers():
    run = script("function f() { return 1 }\ntrace syscalls:sys_enter_openat { print(f()) }",
                 limits=RuntimeLimits(call_depth=0))
    assert not run.fire(EVENT)
    assert run.errors()[0].message == "stack overflow"


def test_tick_handlers_see_the_process_not_the_last_event():
    run = script("trace syscalls:sys_enter_openat { print(pid) }\ntick-1s { print(pid) }")
    import os
    trace, tick = run.machine.registrations
    assert run.machine.run_handler(trace, EVENT)
    assert run.machine.run_handler(tick, None)
    assert run.text() == f"42\n{os.getpid()}\n"


def test_registered_handler_without_arguments_sees_nil_parameters():
    # A registered function with parameters gets none: they read as nil.
    main = main_fn([("CLOSURE", 1, 1), ("REGISTER", 0, 1), ("RETURN0",)])
    handler = fn([("CALLB", 2, "print", 0, 2), ("RETURN0",)], nparams=2, name="h")
    run = start(prog(main, handler, probes=[TICK]))
    assert run.ok and run.fire(None) and run.text() == "nil\tnil\n"


@pytest.mark.parametrize("steps, ok", [(0, False), (1, False), (2, True), (3, True)])
def test_a_handler_whose_first_act_is_a_call_is_charged_exactly(steps, ok):
    # f() then g() inside it: two steps.  The inline body charges the first
    # from a literal budget.
    run = script("function g() { return 1 }\nfunction f() { return g() + 1 }\n"
                 "var n = 0\ntrace syscalls:sys_enter_openat { n = f()\n print(n) }",
                 limits=RuntimeLimits(handler_steps=steps))
    assert run.fire(EVENT) is ok
    assert run.text() == ("2\n" if ok else "")
    if not ok:
        assert run.errors()[0].message == "loop execute count exceed max limit"


def test_deepest_nesting_allowed_runs_as_an_inline_handler(translation_mode):
    # run_handler's try and slot test add one block and one indent level
    # around the body: the format limits still fit CPython's.
    from protocol import limits as L
    loops, ifs = L.MAX_LOOP_DEPTH, L.MAX_BLOCK_DEPTH - L.MAX_LOOP_DEPTH
    code = [("LOADBOOL", 1, 1)] + [("LOOP",)] * loops + [("IF", 1)] * ifs
    code += [("NEWTABLE", 4), ("LOADK", 3, K(1)), ("ADDTABLE", 4, 3, 3),
             ("CALLB", 5, "print", 3, 1), ("BREAK",)]
    code += [("END",)] * ifs + [("END",), ("BREAK",)] * (loops - 1) + [("END",), ("RETURN0",)]
    main = main_fn([("CLOSURE", 1, 1), ("REGISTER", 0, 1), ("RETURN0",)])
    run = start(prog(main, fn(code, name="deep"), probes=[TRACE]))
    assert run.ok and bool(run.machine.registrations[0].inline) == (translation_mode == "inline")
    assert run.fire(EVENT) and run.text() == "1\n"


def test_a_long_handler_is_called_not_copied(translation_mode):
    lines = "\n".join(f"  n += {i}" for i in range(translate.MAX_INLINE_SIZE))
    run = script(f"var n = 0\ntrace syscalls:sys_enter_openat {{\n{lines}\n print(n) }}\n"
                 "trace syscalls:sys_enter_openat { print(pid) }")
    long_one, short_one = run.machine.registrations
    assert long_one.inline == 0
    assert bool(short_one.inline) == (translation_mode == "inline")
    assert run.machine.run_handler(long_one, EVENT) and run.machine.run_handler(short_one, EVENT)
    assert run.text() == f"{sum(range(translate.MAX_INLINE_SIZE))}\n42\n"
