"""Run a .kp language-test script the way the daemon would, minus the kernel.

A script states what it should do in comments:

    # expect: LINE        the next output line, exactly (in order; all of them)
    # error: TEXT         a compile error or run-time error containing TEXT
    # args: WORD ...      script arguments (base-10 words become numbers)
    # compile-only        needs events: only compile, encode/decode and verify

Pipeline: compile_source -> encode -> decode -> ktapd.verifier.verify ->
ktapd.vm.Machine (run_main, then run_end when main succeeded) -> records ->
ktapctl.render.render_text.  Without the VM, only the compile half can run;
``Outcome.ran`` says whether the rest did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ktapctl.lang import CompileError, compile_source
from protocol.bytecode import decode, encode

SCRIPTS = Path(__file__).with_name("scripts")


@dataclass
class Spec:
    path: Path
    expect: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    compile_only: bool = False


def read_spec(path: Path) -> Spec:
    spec = Spec(path)
    for line in path.read_text().splitlines():
        m = re.search(r"# (expect|error|args):(?: (.*))?$", line)
        if m:
            kind, text = m.group(1), m.group(2) or ""
            if kind == "expect":
                spec.expect.append(text)
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
    if machine.run_main(script_args(spec)):
        machine.run_end()
    joined = "".join(text)
    lines = joined.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return Outcome(output=lines, ran=True)
