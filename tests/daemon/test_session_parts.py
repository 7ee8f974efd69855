"""Pure parts of ktapd/session.py: args.NAME checks, limits, the outbox."""

from __future__ import annotations

import pytest
from daemon_helpers import compile_source

from ktapd.probes.events import EventDesc
from ktapd.probes.formats import EventLayout, Field
from ktapd.session import (
    LIMIT_CEILINGS,
    Outbox,
    check_event_fields,
    handler_field_names,
    session_limits,
    uses_stacks,
)
from protocol import records
from protocol.limits import RuntimeLimits
from protocol.messages import Ended, Lost, Output, Started


def _desc(spec: str, *names: str) -> EventDesc:
    system, _, name = spec.partition(":")
    fields = tuple(
        Field(n, "int", 8 * i, 8, True, "int") for i, n in enumerate(("common_pid", *names))
    )
    return EventDesc(0, "tracepoint", name, spec, EventLayout(1, system, name, fields, ""))


SCRIPT = """
trace a:one, a:two { print(args.shared, args.only_two) }
trace b:x { var f = function() { return args.inner } print(f()) }
tick-1s { print(1) }
"""


def test_handler_field_names_follow_the_registered_closure():
    program = compile_source(SCRIPT)
    assert handler_field_names(program, 0) == {"shared", "only_two"}
    assert handler_field_names(program, 1) == {"inner"}  # a closure made in the handler
    assert handler_field_names(program, 2) == set()


def test_args_names_must_exist_in_one_of_the_events():
    program = compile_source(SCRIPT)
    check_event_fields(program, 0, [_desc("a:one", "shared"), _desc("a:two", "shared", "only_two")])
    with pytest.raises(ValueError) as info:
        check_event_fields(program, 0, [_desc("a:one", "shared"), _desc("a:two", "shared")])
    assert str(info.value) == "args.only_two: no such field in a:one, a:two; fields: shared"
    with pytest.raises(ValueError, match="args.inner: no such field in b:x; fields: \\(none\\)"):
        check_event_fields(program, 1, [_desc("b:x")])
    timer = EventDesc(2, "tick", "tick-1s", "cpu-clock", None)
    check_event_fields(program, 2, [timer])  # timers have no formats to check


def test_stack_use_asks_for_call_chains():
    assert not uses_stacks(compile_source("trace a:b { print(1) }"))
    assert uses_stacks(compile_source("trace a:b { print(ustack()) }"))


def test_session_limits_are_capped():
    defaults = RuntimeLimits()
    limits = session_limits(defaults, {"string_bytes": 10**9, "call_depth": 50})
    assert limits.string_bytes == LIMIT_CEILINGS["string_bytes"] and limits.call_depth == 50
    assert limits.handler_steps == defaults.handler_steps


async def test_outbox_orders_messages_and_puts_lost_counts_first():
    box = Outbox(7, max_bytes=100)
    box.put(Started(7, 1))
    box.put_records([records.Text("a\n"), records.Text("b\n")])
    box.put_records([records.Text("x" * 200 + "\n" * 3)])  # too big: 3 lines lost
    box.put(Ended(7, True, "exit"))
    assert box.take() == Lost(7, "output", 3)
    assert box.take() == Started(7, 1)
    assert box.take() == Output(7, (records.Text("a\n"), records.Text("b\n")))
    assert box.take() == Ended(7, True, "exit")
    assert box.take() is None and box.buffered == 0
    assert box.lost_total == {"output": 3}


async def test_spare_workers_wait_at_low_priority_and_run_at_normal_priority():
    import os

    import trio

    from ktapd.session import SPARE_NICE, WorkerSpawner

    spawner = WorkerSpawner()  # no nursery: take() starts the next spare itself
    taken = []
    try:
        taken.append(await spawner.take())  # none waiting: a fresh worker
        spare = spawner._spare
        assert spare is not None and spare[0].returncode is None
        taken.append(await spawner.take())
        assert taken[1] is spare
        if os.geteuid() == 0:  # only root lowers a spare's priority (and can undo it)
            assert os.getpriority(os.PRIO_PROCESS, spawner._spare[0].pid) == SPARE_NICE
            assert os.getpriority(os.PRIO_PROCESS, spare[0].pid) == 0
            assert os.getpriority(os.PRIO_PROCESS, taken[0][0].pid) == 0
    finally:
        await spawner.discard()
        for process, sock in taken:
            sock.close()  # a worker still waiting for "start" exits
            with trio.fail_after(10):
                await process.wait()
