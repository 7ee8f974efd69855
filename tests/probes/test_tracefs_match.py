"""tracefs.match_events on a fake tracefs tree: globs, literal names looked
up directly (no listing of all of tracefs), and what is not an event."""

from __future__ import annotations

import os

import pytest

from ktapd.probes import tracefs


@pytest.fixture
def fake_tracefs(tmp_path, monkeypatch):
    events = tmp_path / "events"
    for system, event in [
        ("syscalls", "sys_enter_getppid"),
        ("syscalls", "sys_enter_openat"),
        ("syscalls", "sys_exit_openat"),
        ("sched", "sched_switch"),
    ]:
        (events / system / event).mkdir(parents=True)
        (events / system / event / "format").write_text("name: x\n")
    (events / "sched" / "enable").write_text("0\n")  # files beside event dirs
    (events / "sched" / "no_format").mkdir()  # a directory without a format file
    (events / "enable").write_text("0\n")
    monkeypatch.setattr(tracefs, "_root", tmp_path)
    return tmp_path


def test_globs_and_literals(fake_tracefs):
    assert tracefs.match_events("syscalls", "sys_enter_getppid") == [
        ("syscalls", "sys_enter_getppid")
    ]
    assert tracefs.match_events("syscalls", "sys_enter_*") == [
        ("syscalls", "sys_enter_getppid"),
        ("syscalls", "sys_enter_openat"),
    ]
    assert tracefs.match_events("s*", "*openat") == [
        ("syscalls", "sys_enter_openat"),
        ("syscalls", "sys_exit_openat"),
    ]
    assert tracefs.list_events() == [
        ("sched", "sched_switch"),
        ("syscalls", "sys_enter_getppid"),
        ("syscalls", "sys_enter_openat"),
        ("syscalls", "sys_exit_openat"),
    ]


@pytest.mark.parametrize(
    "system, event",
    [
        ("syscalls", "nosuch"),
        ("nosuch", "sys_enter_getppid"),
        ("sched", "enable"),
        ("sched", "no_format"),
        ("enable", "x"),
        ("..", "events"),
        ("syscalls", "../sched/sched_switch"),
        ("", "sched_switch"),
    ],
)
def test_what_is_not_an_event(fake_tracefs, system, event):
    assert tracefs.match_events(system, event) == []


def test_a_literal_name_lists_no_directory(fake_tracefs, monkeypatch):
    def no_listing(path):
        raise AssertionError(f"listed {path}")

    monkeypatch.setattr(os, "listdir", no_listing)
    assert tracefs.match_events("syscalls", "sys_exit_openat") == [("syscalls", "sys_exit_openat")]
