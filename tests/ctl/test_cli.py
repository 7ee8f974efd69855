"""ktapctl's command line: ktap's left-to-right scanning, verbs, usage
errors, and the paths that need no daemon (-V, -h, -b, compile, disasm)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from fake_daemon import tiny_program

import ktapctl
from ktapctl.cli import (
    COMMAND_LINE_NAME,
    EXIT_USAGE,
    UsageError,
    is_bytecode,
    main,
    parse,
    script_name,
    simple_tracing_source,
)
from protocol.bytecode.encoding import decode, encode
from protocol.bytecode.program import Probe

ROOT = Path(__file__).resolve().parents[2]


def test_script_args_and_command():
    opts = parse(["-q", "s.kp", "1", "two", "--", "ls", "-l", "--", "x"])
    assert opts.script == "s.kp"
    assert opts.script_args == ["1", "two"]
    assert opts.command == ["ls", "-l", "--", "x"]
    assert opts.quiet
    assert script_name(opts) == "s.kp"


def test_one_liner_words_become_args():
    opts = parse(["-e", "print(arg[1])", "7", "--", "true"])
    assert opts.source == "print(arg[1])" and opts.script is None
    assert opts.script_args == ["7"] and opts.command == ["true"]
    assert script_name(opts) == COMMAND_LINE_NAME


def test_valued_options():
    opts = parse(["-o", "f.txt", "-p", "12", "-C", "3", "-T", "-v", "-d", "--json", "x.kp"])
    assert (opts.output, opts.trace_pid, opts.trace_cpu) == ("f.txt", 12, 3)
    assert opts.timestamps and opts.verbose and opts.dry_run and opts.json


@pytest.mark.parametrize(
    ("argv", "action", "attr", "value"),
    [
        (["-le"], "events", "glob", None),
        (["-le", "sched:*"], "events", "glob", "sched:*"),
        (["-lf", "/bin/ls"], "functions", "script", "/bin/ls"),
        (["-lm", "/lib/libc.so.6"], "markers", "script", "/lib/libc.so.6"),
        (["-V"], "version", "script", None),
        (["list"], "list", "script", None),
        (["status"], "status", "script", None),
        (["attach", "4"], "attach", "session", 4),
        (["kill", "5"], "kill", "session", 5),
        (["disasm", "p.kpc"], "disasm", "script", "p.kpc"),
        (["--socket=/tmp/x", "status"], "status", "socket", "/tmp/x"),
        (["--socket", "/tmp/x", "list"], "list", "socket", "/tmp/x"),
        (["submit", "--detach", "a.kp", "3"], "submit", "script_args", ["3"]),
        (["-s", "sched:sched_switch"], "run", "simple_event", "sched:sched_switch"),
    ],
)
def test_actions(argv, action, attr, value):
    opts = parse(argv)
    assert opts.action == action
    assert getattr(opts, attr) == value


def test_compile_verb():
    opts = parse(["compile", "-o", "p.kpc", "s.kp"])
    assert (opts.action, opts.output, opts.script) == ("compile", "p.kpc", "s.kp")


def test_a_verb_only_counts_as_the_first_word():
    opts = parse(["s.kp", "list"])
    assert opts.action == "run" and opts.script_args == ["list"]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["-q"],
        ["-x", "s.kp"],
        ["-p"],
        ["-p", "abc", "s.kp"],
        ["-C", "-1", "s.kp"],
        ["-e", "x", "-s", "ev"],
        ["s.kp", "-e", "print(1)"],
        ["-p", "1", "s.kp", "--", "ls"],
        ["--detach", "s.kp", "--", "ls"],
        ["s.kp", "--"],
        ["attach"],
        ["kill", "me"],
        ["compile", "s.kp"],
        ["-lf"],
        ["list", "extra"],
        ["-q=1", "s.kp"],
    ],
)
def test_usage_errors(argv):
    with pytest.raises(UsageError):
        parse(argv)


def test_usage_error_exit_status(capsys):
    assert main(["-x"]) == EXIT_USAGE
    assert "unknown option -x" in capsys.readouterr().err


def test_simple_tracing_source():
    assert simple_tracing_source("sched:sched_switch") == (
        "trace sched:sched_switch { print(cpu, tid, execname, argstr) }\n"
    )


def test_version_matches_pyproject(capsys):
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert ktapctl.__version__ == meta["project"]["version"]
    assert main(["-V"]) == 0
    assert capsys.readouterr().out.startswith(f"ktapctl {ktapctl.__version__} ")


def test_version_and_usage_do_not_load_trio_or_the_compiler():
    code = (
        "import sys; from ktapctl.cli import main; main(['-V']); main(['-x']);"
        "bad = [m for m in ('trio', 'lark', 'msgpack', 'ktapctl.lang', 'ktapctl.client') "
        "if m in sys.modules]; print('LOADED', bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "LOADED []" in out


def test_bytecode_files_disasm_and_b(tmp_path, capsys):
    program = tiny_program((Probe("tick", period_ns=1_000_000_000, line=1),))
    kpc = tmp_path / "p.kpc"
    kpc.write_bytes(encode(program))
    odd_name = tmp_path / "prog"  # no suffix: recognised by its first bytes
    odd_name.write_bytes(encode(program))
    assert is_bytecode(str(kpc), kpc.read_bytes())
    assert is_bytecode(str(odd_name), odd_name.read_bytes())
    assert not is_bytecode("s.kp", b"trace syscalls:* { }\n")
    assert main(["disasm", str(kpc)]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("; ktap bytecode v1, source 't.kp'")
    assert "probe 0: tick 1000000000 ns" in listing
    assert main(["-b", str(odd_name)]) == 0
    assert capsys.readouterr().out == listing


def test_bad_bytecode_file(tmp_path, capsys):
    bad = tmp_path / "bad.kpc"
    bad.write_bytes(b"\x85\xa5magic garbage")
    assert main(["disasm", str(bad)]) == 1
    assert "not valid ktap bytecode" in capsys.readouterr().err


def test_missing_script_file(tmp_path, capsys):
    assert main(["-b", str(tmp_path / "nope.kp")]) == 1
    assert "cannot open" in capsys.readouterr().err


def test_compile_writes_bytecode_that_decodes(tmp_path, monkeypatch):
    program = tiny_program()
    src = tmp_path / "p.kpc"
    src.write_bytes(encode(program))
    out = tmp_path / "copy.kpc"
    # compile of a .kpc input re-encodes it: the round trip is exact.
    assert main(["compile", "-o", str(out), str(src)]) == 0
    assert decode(out.read_bytes()) == program


def test_compile_error_exit_status_and_full_diagnostics(capsys):
    from ktapctl.cli import EXIT_COMPILE

    assert main(["-b", "-e", "var x = 1\nprint(y)"]) == EXIT_COMPILE
    out, err = capsys.readouterr()
    assert out == ""
    # The compiler's own rendering, whole: location, message, source line.
    assert err.startswith("(command line):2:")
    assert "print(y)" in err


def test_simple_tracing_compiles(capsys):
    assert main(["-b", "-s", "sched:sched_switch"]) == 0
    assert "; probe 0: trace sched:sched_switch" in capsys.readouterr().out


def test_compile_a_script_to_bytecode_and_back(tmp_path, capsys):
    script = tmp_path / "s.kp"
    script.write_text("var n = 0\ntrace syscalls:sys_enter_getppid { n += 1 }\n")
    kpc = tmp_path / "s.kpc"
    assert main(["compile", "-o", str(kpc), str(script)]) == 0
    program = decode(kpc.read_bytes())
    assert program.source_name == str(script)
    assert [p.events for p in program.probes] == [("syscalls:sys_enter_getppid",)]
    assert main(["disasm", str(kpc)]) == 0
    from_kpc = capsys.readouterr().out
    assert main(["-b", str(script)]) == 0
    assert capsys.readouterr().out == from_kpc
