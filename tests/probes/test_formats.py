"""Format-file parsing, lazy field decoding and argstr rendering, on hand-written
format text and records (no kernel needed)."""

from __future__ import annotations

import struct

import pytest

from ktapd.probes import argstr
from ktapd.probes.formats import (
    KIND_BYTES,
    KIND_CHARS,
    KIND_INT,
    KIND_STRING,
    Decoder,
    EventLayout,
    FormatError,
    parse_format,
)

COMMON = """\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;
"""

OPENAT = f"""name: sys_enter_openat
ID: 782
format:
{COMMON}
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;

print fmt: "dfd: 0x%08lx, filename: 0x%08lx, flags: 0x%08lx, mode: 0x%08lx", ((unsigned long)(REC->dfd)), ((unsigned long)(REC->filename)), ((unsigned long)(REC->flags)), ((unsigned long)(REC->mode))
"""

EXEC = f"""name: sched_process_exec
ID: 316
format:
{COMMON}
\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;

print fmt: "filename=%s pid=%d old_pid=%d", __get_str(filename), REC->pid, REC->old_pid
"""

SWITCH = f"""name: sched_switch
ID: 372
format:
{COMMON}
\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t prev_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prev_prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;
\tfield:char next_comm[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;
\tfield:int next_prio;\toffset:60;\tsize:4;\tsigned:1;

print fmt: "prev_comm=%s ...", REC->prev_comm
"""

WAKEUP = f"""name: sched_wakeup
ID: 374
format:
{COMMON}
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
\tfield:int target_cpu;\toffset:32;\tsize:4;\tsigned:1;

print fmt: "comm=%s pid=%d prio=%d target_cpu=%03d", REC->comm, REC->pid, REC->prio, REC->target_cpu
"""


def _common(event_id: int, pid: int = 42) -> bytes:
    return struct.pack("<HBBi", event_id, 0, 0, pid)


def test_openat_layout():
    layout = parse_format(OPENAT, "syscalls")
    assert (layout.id, layout.system, layout.name) == (782, "syscalls", "sys_enter_openat")
    assert layout.arg_names == ("__syscall_nr", "dfd", "filename", "flags", "mode")
    assert [f.kind for f in layout.args] == [KIND_INT] * 5
    assert layout.fields[0].name == "common_type"
    assert layout.print_fmt.startswith('"dfd: 0x%08lx')


def test_field_kinds():
    exec_layout = parse_format(EXEC, "sched")
    assert exec_layout.args[0].kind == KIND_STRING
    assert exec_layout.args[0].name == "filename"
    switch = parse_format(SWITCH, "sched")
    assert switch.args[0].kind == KIND_CHARS
    weird = parse_format("name: x\nID: 9\n\tfield:u8 addr[6];\toffset:8;\tsize:6;\tsigned:0;\n"
                         "\tfield:__data_loc u32[] ids;\toffset:14;\tsize:4;\tsigned:0;\n", "s")
    assert [f.kind for f in weird.args] == [KIND_BYTES, KIND_BYTES]


def test_missing_id_is_an_error():
    with pytest.raises(FormatError):
        parse_format("name: x\nformat:\n", "s")


def test_wire_round_trip():
    layout = parse_format(SWITCH, "sched")
    assert EventLayout.from_wire(layout.to_wire()) == layout


def test_decode_syscall_args():
    decoder = Decoder(parse_format(OPENAT, "syscalls"))
    raw = _common(782) + struct.pack("<i4xQQQQ", 257, 0xFFFFFF9C, 0x7F0000001000, 0x80000, 0)
    assert decoder.arg(raw, 0, 0) == 257
    assert decoder.arg(raw, 0, 1) == 0xFFFFFF9C
    assert decoder.field(raw, 0, "flags") == 0x80000
    assert decoder.arg(raw, 0, 9) is None
    with pytest.raises(KeyError):
        decoder.field(raw, 0, "nope")
    assert decoder.arg(raw[:20], 0, 3) is None  # a truncated record yields nil, not a crash


def test_records_inside_a_larger_buffer():
    """The drain loop hands out (batch, start): offsets are relative to start."""
    layout = parse_format(EXEC, "sched")
    decoder = Decoder(layout)
    name = b"/bin/sh\0"
    record = _common(316) + struct.pack("<Iii", (len(name) << 16) | 20, 9, 8) + name
    batch = b"\xff" * 44 + record + b"\xee" * 16
    assert decoder.field(batch, 44, "filename") == "/bin/sh"
    assert decoder.arg(batch, 44, 2) == 8
    assert argstr.renderer(layout)(decoder, batch, 44) == "filename=/bin/sh pid=9 old_pid=8"


def test_decode_data_loc_and_chars():
    decoder = Decoder(parse_format(EXEC, "sched"))
    name = b"/usr/bin/cat\0"
    raw = _common(316) + struct.pack("<Iii", (len(name) << 16) | 20, 7, 7) + name
    assert decoder.field(raw, 0, "filename") == "/usr/bin/cat"
    assert decoder.arg(raw, 0, 1) == 7
    switch = Decoder(parse_format(SWITCH, "sched"))
    raw = (_common(372) + b"bash".ljust(16, b"\0") + struct.pack("<iiq", 10, 120, 1)
           + b"swapper/0".ljust(16, b"\0") + struct.pack("<ii", 0, 120))
    assert switch.field(raw, 0, "prev_comm") == "bash"
    assert switch.field(raw, 0, "next_comm") == "swapper/0"
    assert switch.field(raw, 0, "prev_state") == 1


def test_argstr_syscalls_like_the_kernel():
    layout = parse_format(OPENAT, "syscalls")
    raw = _common(782) + struct.pack("<i4xQQQQ", 257, 0xFFFFFF9C, 0x7F0000001000, 0x80000, 0)
    render = argstr.renderer(layout)
    assert render(Decoder(layout), raw, 0) == (
        "sys_openat(dfd: 0xffffff9c, filename: 0x7f0000001000, flags: 0x80000, mode: 0)")
    exit_text = ("name: sys_exit_close\nID: 1\n" + COMMON
                 + "\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n"
                 + "\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n")
    exit_layout = parse_format(exit_text, "syscalls")
    render = argstr.renderer(exit_layout)
    assert render(Decoder(exit_layout), _common(1) + struct.pack("<i4xq", 3, 0), 0) == "sys_close -> 0x0"
    assert render(Decoder(exit_layout), _common(1) + struct.pack("<i4xq", 3, -9), 0) == (
        "sys_close -> 0xfffffffffffffff7")


def test_argstr_print_fmt():
    layout = parse_format(WAKEUP, "sched")
    raw = _common(374) + b"kworker/1:2".ljust(16, b"\0") + struct.pack("<iii", 77, 120, 1)
    assert argstr.renderer(layout)(Decoder(layout), raw, 0) == (
        "comm=kworker/1:2 pid=77 prio=120 target_cpu=001")
    layout = parse_format(EXEC, "sched")
    name = b"/usr/bin/cat\0"
    raw = _common(316) + struct.pack("<Iii", (len(name) << 16) | 20, 7, 7) + name
    assert argstr.renderer(layout)(Decoder(layout), raw, 0) == (
        "filename=/usr/bin/cat pid=7 old_pid=7")


@pytest.mark.parametrize(("state", "shown"), [(0, "R"), (1, "S"), (2, "D"), (0x100, "R+"),
                                              (0x81, "S|I")])
def test_argstr_sched_switch(state, shown):
    layout = parse_format(SWITCH, "sched")
    raw = (_common(372) + b"bash".ljust(16, b"\0") + struct.pack("<iiq", 10, 120, state)
           + b"swapper/0".ljust(16, b"\0") + struct.pack("<ii", 0, 120))
    assert argstr.renderer(layout)(Decoder(layout), raw, 0) == (
        f"prev_comm=bash prev_pid=10 prev_prio=120 prev_state={shown} ==> "
        "next_comm=swapper/0 next_pid=0 next_prio=120")


def test_argstr_fallback_for_unknown_helpers():
    text = ("name: odd\nID: 5\n" + COMMON
            + "\tfield:int mode;\toffset:8;\tsize:4;\tsigned:1;\n"
            + "\tfield:unsigned long addr;\toffset:16;\tsize:8;\tsigned:0;\n"
            + 'print fmt: "mode=%s addr=%lx", __print_symbolic(REC->mode, { 1, "A" }), REC->addr\n')
    layout = parse_format(text, "x")
    raw = _common(5) + struct.pack("<i4xQ", 1, 0x1234)
    assert argstr.renderer(layout)(Decoder(layout), raw, 0) == "mode=1 addr=0x1234"
