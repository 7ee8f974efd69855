"""Run a .kp language-test script the way the daemon would, minus the kernel.

A script states what it should do in comments:

    # expect: LINE        the next output line, exactly (in order; all of them)
    # expect-escaped: L   the same, with Python escapes (\x1b) decoded
    # error: TEXT         a compile error or run-time error containing TEXT
    # args: WORD ...      script arguments (base-10 words become numbers)
    # event: N k=v ...    after main, deliver a synthetic event to the handlers of
                          probe N: pid= tid= uid= cpu= execname= probename= argstr=
                          arg0=..arg9= set the event variables, any other name is a
                          field for args.NAME, user.ADDR=TEXT is user memory
    # tick: N [COUNT]     fire the timer handlers of probe N (no event), COUNT times
    # compile-only        needs real events: only compile, encode/decode and verify

Pipeline: compile_source -> encode -> decode -> ktapd.verifier.verify ->
ktapd.vm.Machine (run_main, the scripted events, run_end) -> records ->
ktapctl.render.render_text.  Whether handlers and trace_end still run after
a run-time error or exit() is the VM's decision: the harness always asks.  Without the VM, only the compile half can run;
``Outcome.ran`` says whether the rest did.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ktapctl.lang import CompileError, compile_source
from ktapd.vm.context import FakeEvent
from protocol.bytecode import decode, encode

SCRIPTS = Path(__file__).with_name("scripts")


@dataclass
class Spec:
    path: Path
    expect: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    compile_only: bool = False
    # ("event", probe index, {key: value}) or ("tick", probe index, count)
    deliveries: list[tuple] = field(default_factory=list)


def read_spec(path: Path) -> Spec:
    spec = Spec(path)
    for line in path.read_text().splitlines():
        m = re.search(r"# (expect|expect-escaped|error|args|event|tick):(?: (.*))?$", line)
        if m:
            kind, text = m.group(1), m.group(2) or ""
            if kind == "expect":
                spec.expect.append(text)
            elif kind == "event":
                words = shlex.split(text)
                pairs = dict(w.split("=", 1) for w in words[1:])
                spec.deliveries.append(("event", int(words[0]), pairs))
            elif kind == "tick":
                words = text.split()
                spec.deliveries.append(("tick", int(words[0]), int(words[1]) if len(words) > 1 else 1))
            elif kind == "expect-escaped":
                spec.expect.append(text.encode("ascii").decode("unicode_escape"))
            elif kind == "error":
                spec.errors.append(text)
            else:
                spec.args = text.split()
        elif re.search(r"# compile-only\b", line):
            spec.compile_only = True
    return spec


def script_args(spec: Spec) -> list:
    """[script path, *args] as the VM gets them: base-10 words become numbers."""
    out: list = [str(spec.path.relative_to(SCRIPTS.parent))]
    for word in spec.args:
        out.append(int(word) if re.fullmatch(r"-?[0-9]+", word) else word)
    return out


@dataclass
class Outcome:
    compile_error: str | None = None
    output: list[str] = field(default_factory=list)
    ran: bool = False


def vm_available() -> bool:
    try:
        from ktapd.verifier import verify  # noqa: F401
        from ktapd.vm import Machine  # noqa: F401
    except ImportError:
        return False
    return True


def run(spec: Spec, *, execute: bool = True) -> Outcome:
    source = spec.path.read_text()
    name = str(spec.path.relative_to(SCRIPTS.parent))
    try:
        program = compile_source(source, name)
    except CompileError as exc:
        return Outcome(compile_error=exc.render())
    again = decode(encode(program))
    assert again == program, "encode/decode changed the program"
    try:
        from ktapd.verifier import verify
    except ImportError:
        return Outcome()
    verified = verify(again, admin=True)
    if not execute or spec.compile_only:
        return Outcome()
    try:
        from ktapd.vm import Machine
    except ImportError:
        return Outcome()
    from ktapctl.render import render_text

    text: list[str] = []
    machine = Machine(verified, emit=lambda record: text.append(render_text(record)))
    machine.run_main(script_args(spec))
    for kind, index, what in spec.deliveries:
        handlers = [r for r in machine.registrations if r.index == index]
        if kind == "tick":
            for _ in range(what):
                for reg in handlers:
                    machine.run_handler(reg, None)
        else:
            for reg in handlers:
                machine.run_handler(reg, event_of(what))
    machine.run_end()
    joined = "".join(text)
    lines = joined.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return Outcome(output=lines, ran=True)


_VARIABLES = {"probename", "pid", "tid", "cpu", "uid", "execname", "argstr", "time_ns"}


def _value(text: str):
    return int(text, 0) if re.fullmatch(r"-?(0x[0-9a-fA-F]+|[0-9]+)", text) else text


_STRING_VARIABLES = {"execname", "argstr", "probename"}


def event_of(pairs: dict) -> FakeEvent:
    """The VM's FakeEvent from a script's ``# event:`` line (``k=v`` pairs)."""
    event = FakeEvent(
        kstack=["kfunc_inner+0x10/0x40", "kfunc_outer+0x22/0x80"],
        ustack=["ufunc_inner+0x4", "main+0x10"],
    )
    args: dict[int, object] = {}
    for key, text in pairs.items():
        if key in _VARIABLES:
            setattr(event, key, text if key in _STRING_VARIABLES else _value(text))
        elif re.fullmatch(r"arg[0-9]", key):
            args[int(key[3])] = _value(text)
        elif key.startswith("user."):
            event.memory[int(key[5:], 0)] = text
        else:
            event.fields[key] = _value(text)
    event.args = tuple(args.get(n) for n in range(max(args, default=-1) + 1))
    return event
