"""Run a script or an assembled program through verify + Machine and collect records."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ktapd.verifier import verify
from ktapd.vm import FakeEvent, Machine
from protocol.limits import RuntimeLimits
from protocol.records import Error, Text


@dataclass
class Run:
    machine: Machine
    records: list = field(default_factory=list)
    ok: bool = True

    def text(self) -> str:
        return "".join(r.text for r in self.records if isinstance(r, Text))

    def errors(self) -> list[Error]:
        return [r for r in self.records if isinstance(r, Error)]

    def fire(self, event=None, index: int = 0) -> bool:
        return self.machine.run_handler(self.machine.registrations[index], event)


def start(program, *, args=("test.kp",), limits=None, **kw) -> Run:
    records: list = []
    m = Machine(verify(program), emit=records.append, limits=limits or RuntimeLimits(), **kw)
    run = Run(m, records)
    run.ok = m.run_main(list(args))
    return run


def script(source: str, **kw) -> Run:
    lang = pytest.importorskip("ktapctl.lang")
    return start(lang.compile_source(source, "test.kp"), **kw)


def output(source: str, **kw) -> str:
    """Text output of a script's main chunk, then 'error: MSG' for a run-time error."""
    run = script(source, **kw)
    if run.ok:
        run.machine.run_end()
    text = run.text()
    for e in run.errors():
        text += f"error: {e.message}\n"
    return text


EVENT = FakeEvent(probename="sys_enter_openat", pid=42, tid=43, cpu=1, uid=1000, time_ns=1_500_000_000,
                  execname="bash", argstr="sys_openat(dfd: ffffff9c)", args=(257, -100, "/etc/passwd"),
                  fields={"dfd": -100, "filename": "/etc/passwd"}, kstack=["do_sys_open+0x1", "entry"],
                  ustack=["open", "main"], memory={0x1000: "hello"})
