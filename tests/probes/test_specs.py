"""Spec parsing and classification, SDT notes and arguments, event naming (no kernel)."""

from __future__ import annotations

import struct

import msgpack
import pytest

from ktapd.probes import kprobe, registry, timers, uprobe
from ktapd.probes.events import EventDesc
from ktapd.probes.perf_event import ProbeError, check_filter_text


@pytest.mark.parametrize(("spec", "kind"), [
    ("syscalls:sys_enter_openat", "tracepoint"),
    ("*:*", "tracepoint"),
    ("probe:/bin/ls:main", "uprobe"),
    ("probe:/lib/libc.so.6:malloc%return arg1=$retval", "uprobe"),
    ("probe:do_sys_open dfd=%di", "kprobe"),
    ("sdt:/usr/bin/python3:function__entry", "sdt"),
    ("ftrace:function", "ftrace"),
])
def test_classify(spec, kind):
    assert registry.classify(spec).name == kind


def test_classify_rejects_nonsense():
    with pytest.raises(ProbeError, match="unknown event spec"):
        registry.classify("nocolon")


def test_parse_uprobe_spec():
    spec = uprobe.parse_uprobe_spec("/bin/true:ma*%return arg1=%di +8(%sp):u32")
    assert spec.place == "ma*" and spec.retprobe
    assert spec.fetchargs == ("arg1=%di", "+8(%sp):u32")
    with pytest.raises(uprobe.UprobeError):
        uprobe.parse_uprobe_spec("relative/path:main")
    with pytest.raises(uprobe.UprobeError):
        uprobe.parse_uprobe_spec("/bin/true:main arg1=%di;rm")


def test_parse_kprobe_spec():
    spec = kprobe.parse_kprobe_spec("do_sys_openat2%return ret=$retval")
    assert (spec.symbol, spec.retprobe, spec.fetchargs) == ("do_sys_openat2", True,
                                                            ("ret=$retval",))
    with pytest.raises(kprobe.KprobeError):
        kprobe.parse_kprobe_spec("bad;symbol")


def test_event_names_are_valid_and_unique():
    taken: set[str] = set()
    assert uprobe.event_name("foo.cold", False, taken) == "foo_cold"
    assert uprobe.event_name("foo.cold", False, taken) == "foo_cold_2"
    assert uprobe.event_name("0x1234", True, taken) == "p_0x1234__return"
    long_name = uprobe.event_name("x" * 200, False, taken)
    assert len(long_name) < uprobe.MAX_EVENT_NAME


def _note(provider: bytes, name: bytes, args: bytes, pc: int, base: int, sem: int) -> bytes:
    desc = struct.pack("<QQQ", pc, base, sem) + provider + b"\0" + name + b"\0" + args + b"\0"
    owner = b"stapsdt\0"
    out = struct.pack("<III", len(owner), len(desc), 3) + owner
    out += desc + b"\0" * (-len(desc) % 4)
    return out


def test_parse_hand_built_stapsdt_notes():
    data = (_note(b"myapp", b"start", b"-4@%edi 8@%rsi", 0x1139, 0x2004, 0)
            + struct.pack("<III", 4, 4, 1) + b"GNU\0" + b"\x01\x02\x03\x04"  # another note
            + _note(b"myapp", b"stop", b"", 0x1150, 0x2004, 0x4010))
    markers = uprobe.parse_stapsdt_notes(data)
    assert [(m.provider, m.name, m.pc, m.semaphore, m.args) for m in markers] == [
        ("myapp", "start", 0x1139, 0, "-4@%edi 8@%rsi"),
        ("myapp", "stop", 0x1150, 0x4010, ""),
    ]


def test_sdt_arguments_become_fetchargs():
    assert uprobe.sdt_fetchargs("-4@%edi 8@%rsi 1@%al -8@-16(%rbp) 4@$42 8@%r12") == [
        "arg1=%di:s32", "arg2=%si:u64", "arg3=%ax:u8", "arg4=-16(%bp):s64", "arg5=\\42:u32",
        "arg6=%r12:u64"]
    with pytest.raises(uprobe.UprobeError):
        uprobe.sdt_fetchargs("4@%xmm0")


def test_filter_text_checks():
    check_filter_text('fd == 1 && comm == "bash"')
    with pytest.raises(ProbeError, match="control characters"):
        check_filter_text("fd == 1\nfd == 2")


def test_timer_names_and_periods():
    assert timers.period_name("tick", 100_000_000) == "tick-100ms"
    assert timers.period_name("profile", 1_000_000_000) == "profile-1s"
    assert timers.period_name("profile", 250_000) == "profile-250us"
    with pytest.raises(ValueError):
        timers.check_period(1000)


def test_desc_is_msgpack_safe():
    desc = EventDesc(2, "tick", "tick-1s", "cpu-clock")
    assert EventDesc.from_wire(msgpack.unpackb(msgpack.packb(desc.to_wire()))) == desc
