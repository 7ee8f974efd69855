"""Golden tests for ktapctl.render: ktap's print_hist bytes, DTrace's quantize
layout, error/lost lines and JSON lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ktapctl.render import STDERR, STDOUT, render_json, render_text, stream_of
from protocol.records import (
    Error,
    Histogram,
    Lost,
    Notice,
    Quantize,
    Text,
    from_wire,
    to_wire,
)

# shared/ lies beside the checkout (on developer machines and in CI).
LANGUAGE_MD = Path(__file__).resolve().parents[3] / "shared" / "LANGUAGE.md"


def hist(pairs, **kw):
    rows = tuple(pairs)
    return Histogram(rows=rows, total=kw.pop("total", sum(c for _, c in rows)), **kw)


def test_print_hist_matches_language_md_example_byte_for_byte():
    expected = (
        "                         value ------------- Distribution ------------- count\n"
        "                           read |@@@@@@@@@@@@@@@@@@@@@@                300\n"
        "                          write |@@@@@@@                               100\n"
        "                           open |@@@                                   50\n"
        "                          close |@@@                                   50\n"
    )
    record = hist([("read", 300), ("write", 100), ("open", 50), ("close", 50)])
    assert render_text(record) == expected


@pytest.mark.skipif(not LANGUAGE_MD.exists(), reason="LANGUAGE.md not on this machine")
def test_print_hist_matches_the_block_in_language_md_itself():
    # Guards against the spec and the hand-copied golden above drifting apart.
    text = LANGUAGE_MD.read_text()
    block = re.search(r"```\n( +value -+ Distribution -+ count\n.*?)```", text, re.S)
    assert block, "print_hist example not found in LANGUAGE.md"
    record = hist([("read", 300), ("write", 100), ("open", 50), ("close", 50)])
    assert render_text(record) == block.group(1)


def test_print_hist_kernel_example_from_inventory():
    # reference/ktap-inventory.md §4.1 (master format, trailing spaces dropped).
    record = hist(
        [
            ("sys_enter_read", 300),
            ("sys_enter_write", 100),
            ("sys_enter_open", 50),
            ("sys_enter_close", 50),
        ]
    )
    lines = render_text(record).splitlines()
    assert lines[1] == "                 sys_enter_read |@@@@@@@@@@@@@@@@@@@@@@                300"
    assert lines[4] == "                sys_enter_close |@@@                                   50"


def test_print_hist_bar_uses_total_of_all_entries_not_just_shown_rows():
    record = hist([("a", 10)], total=20, truncated=True)
    lines = render_text(record).splitlines()
    assert lines[1] == " " * 30 + "a |" + "@" * 19 + " " * 19 + "10"
    assert lines[2] == " " * 28 + "... |"


def test_print_hist_long_keys_are_cut_to_28_plus_dots():
    key31 = "k" * 31
    key32 = "x" * 32
    lines = render_text(hist([(key31, 1), (key32, 1)])).splitlines()
    assert lines[1].startswith(key31 + " |")
    assert lines[2].startswith(" " * 0 + "x" * 28 + "... |")
    assert all(line.index("|") == 32 for line in lines[1:])


def test_print_hist_stack_keys_print_frames_then_the_bar():
    stack = "schedule+0x1/0x10\ndo_syscall_64+0x2/0x20\n"
    text = render_text(hist([(stack, 3), ("other\nframe", 1)], stack_keys=True))
    assert text.splitlines() == [
        "                         value ------------- Distribution ------------- count",
        "schedule+0x1/0x10",
        "do_syscall_64+0x2/0x20",
        " " * 31 + " |" + "@" * 28 + " " * 10 + "3",
        "",
        "other",
        "frame",
        " " * 31 + " |" + "@" * 9 + " " * 29 + "1",
        "",
    ]


def test_print_hist_zero_total_and_negative_counts_draw_no_bar():
    lines = render_text(hist([("a", 0)], total=0)).splitlines()
    assert lines[1] == " " * 30 + "a |" + " " * 38 + "0"
    lines = render_text(hist([("b", -5)], total=10)).splitlines()
    assert lines[1] == " " * 30 + "b |" + " " * 38 + "-5"


def test_print_hist_empty_table_prints_only_the_header():
    assert render_text(Histogram(rows=(), total=0)) == (
        "                         value ------------- Distribution ------------- count\n"
    )


def test_quantize_dtrace_layout():
    # peers.md §4.4: DTrace's own example (bar over the sum, rounded).
    record = Quantize(buckets=((8192, 0), (16384, 4), (32768, 0), (65536, 1), (131072, 0)))
    assert render_text(record) == (
        "           value  ------------- Distribution ------------- count\n"
        "            8192 |                                         0\n"
        "           16384 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@         4\n"
        "           32768 |                                         0\n"
        "           65536 |@@@@@@@@                                 1\n"
        "          131072 |                                         0\n"
    )


def test_quantize_negative_and_zero_buckets():
    record = Quantize(buckets=((-2, 0), (-1, 1), (0, 1), (1, 0)))
    lines = render_text(record).splitlines()
    assert lines[2] == "              -1 |" + "@" * 20 + " " * 20 + " 1"
    assert lines[3] == "               0 |" + "@" * 20 + " " * 20 + " 1"


def test_error_line():
    assert render_text(Error("divide 0", "t.kp", 3)) == "error: divide 0 (t.kp:3)\n"
    assert render_text(Error("divide 0", "(command line)", 1)) == (
        "error: divide 0 ((command line):1)\n"
    )
    assert render_text(Error("boom")) == "error: boom\n"


def test_lost_summary_goes_to_stderr():
    record = Lost("ring", 123)
    assert render_text(record) == "lost 123 events (ring buffer overrun)\n"
    assert stream_of(record) == STDERR
    assert render_text(Lost("something-new", 2)) == "lost 2 events (something-new)\n"
    assert stream_of(Text("x\n")) == STDOUT
    assert stream_of(Error("x")) == STDOUT


def test_text_is_exact_and_timestamps_follow_ktap_T():
    assert render_text(Text("a\tb\n")) == "a\tb\n"
    assert render_text(Text("no newline")) == "no newline"
    assert render_text(Text("ev\n", time_ns=12_345_678_901)) == "   12.345678: ev\n"
    assert render_text(Text("ev\n", time_ns=123456_000_001_000)) == "123456.000001: ev\n"


def test_notice_ends_with_newline():
    assert render_text(Notice("Tracing... Hit Ctrl-C to end.")) == (
        "Tracing... Hit Ctrl-C to end.\n"
    )


ALL_RECORDS = [
    Text("hello\n"),
    Text("ev\n", time_ns=5),
    hist([("read", 3), ("write", 1)], truncated=True),
    Quantize(buckets=((0, 0), (1, 2), (2, 0))),
    Error("divide 0", "t.kp", 7),
    Lost("output", 9),
    Notice("Tracing... Hit Ctrl-C to end."),
]


@pytest.mark.parametrize("record", ALL_RECORDS, ids=lambda r: type(r).__name__)
def test_json_is_one_line_object_with_type(record):
    line = render_json(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["type"] == to_wire(record)["r"]


def test_json_fields():
    doc = json.loads(render_json(hist([("read", 3), ("write", 1)], truncated=True)))
    assert doc == {
        "type": "hist",
        "rows": [{"key": "read", "count": 3}, {"key": "write", "count": 1}],
        "total": 4,
        "truncated": True,
        "stack_keys": False,
    }
    assert json.loads(render_json(Quantize(buckets=((1, 2),)))) == {
        "type": "quantize",
        "buckets": [{"value": 1, "count": 2}],
    }
    assert json.loads(render_json(Text("x\x00\xff\n"))) == {"type": "text", "text": "x\x00\xff\n"}
    assert json.loads(render_json(Error("m", "f", 2))) == {
        "type": "error",
        "message": "m",
        "source": "f",
        "line": 2,
    }


@pytest.mark.parametrize("record", ALL_RECORDS, ids=lambda r: type(r).__name__)
def test_render_after_wire_round_trip_is_the_same(record):
    again = from_wire(to_wire(record))
    assert render_text(again) == render_text(record)


def test_not_a_record_is_a_type_error():
    with pytest.raises(TypeError):
        render_text("plain string")
    with pytest.raises(TypeError):
        render_json(42)
