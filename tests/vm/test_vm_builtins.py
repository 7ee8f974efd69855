"""Builtins: exact output formats and records, event variables, output batching."""

from __future__ import annotations

import os
import re
import threading

import pytest
from vmrun import EVENT, output, script

from ktapd.vm import FakeEvent
from protocol.limits import RuntimeLimits
from protocol.records import Histogram, Quantize, Text

pytest.importorskip("ktapctl.lang")


def test_print_forms():
    out = output("var t = {}\nfunction f() { }\nprint(nil, true, false, -12, \"raw\\tstr\", t, f)")
    assert re.fullmatch(r"nil\ttrue\tfalse\t-12\traw\tstr\ttable 0x[0-9a-f]+\tfunction 0x[0-9a-f]+\n",
                        out), out
    assert output("print()") == "\n"


@pytest.mark.parametrize("fmt, args, shown", [
    ("%d|%i", "42, -7", "42|-7"),
    ("%5d|%-5d|%05d", "42, 42, 42", "   42|42   |00042"),
    ("%+d|% d|%+d", "5, 5, -5", "+5| 5|-5"),
    ("%.3d|%8.3d|%-8.3d|", "7, 7, -7", "007|     007|-007    |"),
    ("%x|%X|%#x|%#X|%#x", "255, 255, 255, 255, 0", "ff|FF|0xff|0XFF|0"),
    ("%o|%#o|%#o", "8, 8, 0", "10|010|0"),
    ("%u|%x", "-1, -1", "18446744073709551615|ffffffffffffffff"),
    ("%c%c%c", "72, 105, 0x121", "Hi!"),
    ("%s|%10s|%-10s|%.2s", "\"abc\", \"abc\", \"abc\", \"abc\"", "abc|       abc|abc       |ab"),
    ("%s %s %s", "nil, true, 12", "nil true 12"),
    ("%p", "4096", "0x1000"),
    ("100%%", "", "100%"),
    ("%ld %lu %lld", "1, 2, 3", "1 2 3"),
    ("%d", "0x7fffffffffffffff + 1", "-9223372036854775808"),
])
def test_printf(fmt, args, shown):
    call = f"printf(\"{fmt}\"{', ' if args else ''}{args})"
    assert output(call) == shown


@pytest.mark.parametrize("call, message", [
    ("printf(\"%d\", \"x\")", "bad argument #2 to 'printf' (number expected for '%d', got string)"),
    ("printf(\"%d %d\", 1)", "bad argument #3 to 'printf' (no value)"),
    ("printf(\"%y\", 1)", "printf: invalid conversion '%y'"),
    ("printf(\"%\")", "printf: the format ends inside a conversion"),
    ("printf(\"%c\", \"a\")", "number expected for '%c'"),
    ("printf(\"%99999d\", 1)", "printf: width or precision larger than"),
    ("printf(1)", "bad argument #1 to 'printf' (string expected, got number)"),
])
def test_printf_errors(call, message):
    assert message in output(call)


def test_printf_result_limit():
    limits = RuntimeLimits(output_line_bytes=10)
    assert output("printf(\"%s\", \"0123456789\")", limits=limits) == "0123456789"
    assert "printf: result longer than 10 characters" in output(
        "printf(\"%s!\", \"0123456789\")", limits=limits)


def test_print_hist_record():
    run = script("var t = {}\nt[\"read\"] = 300\nt[\"write\"] = 100\nt[\"open\"] = 50\n"
                 "t[\"close\"] = 50\nprint_hist(t)")
    (hist,) = [r for r in run.records if isinstance(r, Histogram)]
    assert hist == Histogram(rows=(("read", 300), ("write", 100), ("close", 50), ("open", 50)),
                             total=500, truncated=False, stack_keys=False)


def test_print_hist_top_n_and_mixed_keys():
    run = script("var t = {}\nfor (i = 1, 30) { t[i] = i }\nt[\"x\"] = 5\nprint_hist(t, 3)\nprint_hist(t)")
    short, default = [r for r in run.records if isinstance(r, Histogram)]
    assert short.rows == (("30", 30), ("29", 29), ("28", 28)) and short.truncated
    assert short.total == sum(range(1, 31)) + 5
    assert len(default.rows) == 20 and default.truncated
    assert ("5", 5) in default.rows or default.rows[-1][1] > 5
    assert output("var t = {}\nt[1] = \"x\"\nprint_hist(t)").startswith(
        "error: print_hist only can print number values")


def test_print_hist_of_aggregates_uses_counts():
    run = script("var t = {}\nt[\"a\"] <<< 100\nt[\"a\"] <<< 100\nt[\"b\"] <<< 1\nprint_hist(t)")
    (hist,) = [r for r in run.records if isinstance(r, Histogram)]
    assert hist.rows == (("a", 2), ("b", 1)) and hist.total == 3


def test_text_before_a_histogram_is_flushed_first():
    run = script("var t = {}\nt[1] = 1\nprint(\"before\")\nprint_hist(t)\nprint(\"after\")")
    kinds = [type(r).__name__ for r in run.records]
    assert kinds == ["Text", "Histogram", "Text"]


def test_aggregates():
    assert output("var s = {}\nfor (i = 1, 100) { s[\"k\"] <<< i }\nvar a = s[\"k\"]\n"
                  "print(count(a), sum(a), avg(a), min(a), max(a))\nprint(a)\n"
                  "print(count(nil), sum(s[\"none\"]))") == \
        "100\t5050\t50\t1\t100\n[count: 100 sum: 5050 max: 100 min: 1 avg: 50]\n0\t0\n"
    assert output("var s = {}\ns[1] = 5\ns[1] <<< 3").startswith("error: <<< on a number value")
    assert output("print(count(5))").startswith("error: bad argument #1 to 'count'")


def test_hist_is_a_quantize_record_fenced_by_zero_rows():
    run = script("var s = {}\nfor (i = 1, 5) { s[1] <<< i }\ns[1] <<< 0\ns[1] <<< -3\nhist(s[1])")
    (q,) = [r for r in run.records if isinstance(r, Quantize)]
    assert q.buckets == ((-4, 0), (-2, 1), (-1, 0), (0, 1), (1, 1), (2, 2), (4, 2), (8, 0))


def test_len_delete_stringof_table_new_ptable():
    assert output("var t = {1, 2, 3}\nprint(len(t), len(\"abcd\"))\ndelete(t)\nprint(len(t))") == \
        "3\t4\n0\n"
    assert output("print(len(5))").startswith("error: bad argument #1 to 'len'")
    assert output("var t = ptable()\nt[1] <<< 2\nprint(count(t[1]))") == "1\n"
    assert output("print(stringof(\"s\"), stringof(3))") == "s\t3\n"


def test_ansi_sequences_are_ktaps():
    assert output("ansi.clear_screen()\nansi.set_color(31)\nansi.set_color2(31, 42)\n"
                  "ansi.set_color3(31, 42, 1)\nansi.set_color3(31, 42, 0)\nansi.reset_color()\n"
                  "ansi.new_line()") == \
        "\033[1;1H\033[J\033[31m\033[31;42m\033[31;42;1m\033[31;42m\033[0;0m\n"


def test_host_builtins():
    out = output("print(num_cpus(), arch(), kernel_v(), gettimeofday_s() > 1000000000, "
                 "gettimeofday_ns() > gettimeofday_us())")
    cpus, arch, release, t1, t2 = out.rstrip("\n").split("\t")
    assert int(cpus) >= 1 and arch == os.uname().machine and release == os.uname().release
    assert t1 == t2 == "true"


def test_event_variables_and_fields():
    run = script("trace syscalls:sys_enter_openat {\n"
                 "  print(probename, pid, tid, cpu, uid, execname)\n"
                 "  print(arg0, arg1, arg2, arg3, args.dfd, args.filename)\n"
                 "  print(argstr, stringof(argstr), len(argstr))\n"
                 "  print(user_string(0x1000), user_string(8))\n"
                 "  print_trace_clock()\n"
                 "}")
    assert run.fire(EVENT)
    assert run.text() == ("sys_enter_openat\t42\t43\t1\t1000\tbash\n"
                          "257\t-100\t/etc/passwd\tnil\t-100\t/etc/passwd\n"
                          "sys_openat(dfd: ffffff9c)\tsys_openat(dfd: ffffff9c)\t25\n"
                          "hello\tnil\n"
                          "    1.500000\n")


def test_event_ints_wider_than_int64_wrap():
    run = script("trace syscalls:sys_enter_openat { print(arg0, args.x) }")
    assert run.fire(FakeEvent(args=((1 << 64) - 1,), fields={"x": 1 << 63}))
    assert run.text() == "-1\t-9223372036854775808\n"


def test_missing_field_is_an_error():
    run = script("trace syscalls:sys_enter_openat { print(args.nope) }")
    assert not run.fire(EVENT)
    assert run.errors()[0].message == "the event has no field 'nope'"


def test_stacks():
    run = script("var s = {}\ntrace syscalls:sys_enter_openat {\n"
                 "  print(stack())\n  print(stack(1), ustack(1))\n  s[stack()] += 1\n"
                 "  print(stringof(stack()))\n}\ntrace_end { print_hist(s) }")
    assert run.fire(EVENT) and run.fire(EVENT)
    first = run.text().split("\n")[:6]
    assert first == ["<stack trace>", " => do_sys_open+0x1", " => entry",
                     "<stack trace>", " => do_sys_open+0x1\t<stack trace>", " => open"]
    assert run.machine.run_end()
    (hist,) = [r for r in run.records if isinstance(r, Histogram)]
    assert hist.stack_keys and hist.rows == (("do_sys_open+0x1\nentry", 2),)


def test_event_builtins_without_an_event():
    for call in ("stack()", "ustack()", "user_string(1)", "print_trace_clock()"):
        assert output(call) == "error: invalid event context\n", call


def test_task_variables_without_an_event_describe_this_process():
    out = output("print(pid, tid, uid)")
    assert out == f"{os.getpid()}\t{threading.get_native_id()}\t{os.getuid()}\n"


def test_tick_handler_has_no_event_context():
    run = script("tick-1s { print(arg1) }")
    assert not run.fire(None)
    assert run.errors()[0].message == "invalid event context"


def test_one_text_record_per_invocation_and_timestamps():
    run = script("trace syscalls:sys_enter_openat { print(1)\n print(2)\n printf(\"%d\\n\", 3) }",
                 timestamps=True)
    assert run.fire(EVENT)
    texts = [r for r in run.records if isinstance(r, Text)]
    assert texts == [Text(text="1\n2\n3\n", time_ns=EVENT.time_ns)]


def test_chatty_handler_is_flushed_in_pieces():
    run = script("for (i = 1, 2000) { print(i) }")
    texts = [r for r in run.records if isinstance(r, Text)]
    assert len(texts) > 1
    assert "".join(t.text for t in texts) == "".join(f"{i}\n" for i in range(1, 2001))


def test_ipof_symbolises_when_the_machine_can():
    src = "var t = {}\nt[ipof(0xffffffff81000000)] += 1\nprint(stringof(ipof(16)))\nprint_hist(t)"
    plain = script(src)
    assert plain.text() == "0x10\n"
    assert [r for r in plain.records if isinstance(r, Histogram)][0].rows == \
        (("0xffffffff81000000", 1),)
    named = script(src, symbolize=lambda addr: f"sym_{addr & 0xff}")
    assert named.text() == "sym_16\n"
    assert [r for r in named.records if isinstance(r, Histogram)][0].rows == (("sym_0", 1),)


def test_printf_limits_are_each_machines_own():
    # The same format, first under a generous line limit, then a small one:
    # what one machine parsed must not let the other skip its width check.
    fmt = "printf(\"%60d|%s\\n\", 7, execname)"
    assert output(fmt) == " " * 59 + "7|" + output("print(execname)")
    small = RuntimeLimits(output_line_bytes=50)
    assert output(fmt, limits=small) == "error: printf: width or precision larger than 50\n"
    assert output(fmt) == " " * 59 + "7|" + output("print(execname)")


def test_printf_of_an_event_string_format():
    run = script("trace syscalls:sys_enter_openat { printf(argstr) printf(\"%s|%d\\n\", argstr, pid) }")
    assert run.fire(EVENT)
    assert run.text() == f"{EVENT.argstr}{EVENT.argstr}|42\n"
