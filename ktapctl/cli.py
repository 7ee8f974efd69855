"""The ktapctl command line: ktap's options, plus the verbs a shared daemon needs.

``main(argv)`` parses the words (``parse``), builds the program (compile a
script, read a ``.kpc`` file, or expand ``-s``), and hands anything that
needs the daemon to ktapctl/client.py.  Options are scanned left to right
as ktap did: the first word that is not an option is the script, the words
after it are the script's arguments, and ``--`` starts a command to trace.

Start-up time matters (``ktapctl -e 'print(1)'`` should feel like
``python3 -c``): this module imports only the standard library at load
time; the compiler, the client and msgpack are imported where they are needed,
so ``-V`` and usage errors never load them.

This module must not import ktapd, talk to sockets itself, or draw output
records (ktapctl/render.py does that).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field

PROG = "ktapctl"
DEFAULT_SOCKET = "/run/ktapd/ktapd.sock"
SOCKET_ENV = "KTAP_SOCKET"
COMMAND_LINE_NAME = "(command line)"  # arg[0] and the source name for -e and -s
BYTECODE_SUFFIX = ".kpc"

# Exit statuses, one table.
EXIT_OK = 0  # the script ran to its end (also after Ctrl-C)
EXIT_FAILED = 1  # run-time error, refused request, daemon unreachable
EXIT_USAGE = 2  # the command line itself is wrong
EXIT_COMPILE = 3  # the script does not compile (full diagnostics on stderr)
EXIT_INTERRUPTED = 130  # a second Ctrl-C: stop without waiting for trace_end

USAGE = """\
usage: ktapctl [options] script.kp [script args...] [-- cmd [args...]]
       ktapctl [options] -e 'one-liner' [script args...] [-- cmd [args...]]
       ktapctl [options] script.kpc ...             run compiled bytecode
       ktapctl submit [--detach] script.kp ...      the same, spelled as a verb
       ktapctl list | status | attach ID | kill ID
       ktapctl compile -o prog.kpc script.kp
       ktapctl disasm prog.kpc|script.kp

options:
  -e SRC        run the one-liner SRC (arg[0] is "(command line)")
  -o FILE       write the output to FILE instead of stdout
  -p PID        trace only process PID; end when it exits
  -C CPU        trace only CPU number CPU
  -T            timestamps on event lines
  -q            quiet: no "Tracing... Hit Ctrl-C to end."
  -v            verbose
  -d            dry run: probes on, handlers off (overhead measurement)
  -s EVENT      simple tracing: trace EVENT { print(cpu, tid, execname, argstr) }
  -b            print the bytecode and exit
  -le [GLOB]    list available events (matching GLOB)
  -lf DSO       list the functions of binary DSO as probe:DSO:sym
  -lm DSO       list the SDT markers of binary DSO as sdt:DSO:name
  -V            print the version
  -h            this help
  --json        output records as JSON lines
  --detach      leave the session running in the daemon; print its id
  --socket PATH the daemon's socket (default $KTAP_SOCKET or /run/ktapd/ktapd.sock)
  --embedded    run an in-process daemon instead of connecting to one
  -- cmd ...    start cmd, trace it, end when it exits

exit status: 0 the script ran to its end (also after Ctrl-C); 1 run-time error,
refused request or no daemon; 2 usage error; 3 compile error.
"""


class UsageError(Exception):
    """The command line is wrong; the text says how."""


@dataclass
class Options:
    """Everything the command line said, after parsing."""

    action: str = "run"  # one of ACTIONS
    script: str | None = None  # script file (.kp or .kpc), or the verb's file argument
    source: str | None = None  # -e
    simple_event: str | None = None  # -s
    script_args: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)  # after --
    output: str | None = None  # -o (and `compile -o`)
    trace_pid: int | None = None  # -p
    trace_cpu: int | None = None  # -C
    timestamps: bool = False  # -T
    quiet: bool = False  # -q
    verbose: bool = False  # -v
    dry_run: bool = False  # -d
    print_bytecode: bool = False  # -b
    json: bool = False  # --json
    detach: bool = False  # --detach
    embedded: bool = False  # --embedded
    socket: str | None = None  # --socket (None: $KTAP_SOCKET or the default)
    glob: str | None = None  # -le GLOB
    session: int | None = None  # attach ID / kill ID

    @property
    def socket_path(self) -> str:
        return self.socket or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET

    @property
    def socket_was_chosen(self) -> bool:
        """The user named a socket: never fall back to an embedded daemon then."""
        return bool(self.socket or os.environ.get(SOCKET_ENV))


# The verbs: a first word equal to one of these is a verb, not a script
# (run a script called `list` as `./list`).  Value: what the verb takes.
VERBS: dict[str, str] = {
    "submit": "script",
    "list": "",
    "status": "",
    "attach": "session",
    "kill": "session",
    "compile": "script",
    "disasm": "script",
}
ACTIONS = (
    "run",
    "version",
    "help",
    "events",
    "functions",
    "markers",
    *VERBS,
)


@dataclass(frozen=True)
class OptionSpec:
    attr: str  # Options attribute
    value: str = ""  # "" a flag; "str" or "int" a required value; "opt" an optional value
    action: str = ""  # the action this option selects, if any


# THE option table (ktap's letters first).
OPTIONS: dict[str, OptionSpec] = {
    "-e": OptionSpec("source", "str"),
    "-o": OptionSpec("output", "str"),
    "-p": OptionSpec("trace_pid", "int"),
    "-C": OptionSpec("trace_cpu", "int"),
    "-T": OptionSpec("timestamps"),
    "-q": OptionSpec("quiet"),
    "-v": OptionSpec("verbose"),
    "-d": OptionSpec("dry_run"),
    "-s": OptionSpec("simple_event", "str"),
    "-b": OptionSpec("print_bytecode"),
    "-le": OptionSpec("glob", "opt", "events"),
    "-lf": OptionSpec("script", "str", "functions"),
    "-lm": OptionSpec("script", "str", "markers"),
    "-V": OptionSpec("", "", "version"),
    "--version": OptionSpec("", "", "version"),
    "-h": OptionSpec("", "", "help"),
    "-?": OptionSpec("", "", "help"),
    "--help": OptionSpec("", "", "help"),
    "--json": OptionSpec("json"),
    "--detach": OptionSpec("detach"),
    "--embedded": OptionSpec("embedded"),
    "--socket": OptionSpec("socket", "str"),
}


def parse(argv: list[str]) -> Options:
    """The words after the program name -> Options.  Raises UsageError."""
    opts = Options()
    words = list(argv)
    i = 0
    verb_allowed = True  # a verb may only be the first non-option word
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            opts.command = words[i:]
            if not opts.command:
                raise UsageError("-- must be followed by a command")
            break
        name, eq, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        spec = OPTIONS.get(name)
        if spec is not None:
            value = None
            if spec.value in ("str", "int"):
                if eq:
                    value = inline
                elif i < len(words):
                    value = words[i]
                    i += 1
                else:
                    raise UsageError(f"option {name} needs a value")
            elif spec.value == "opt":
                if eq:
                    value = inline
                elif i < len(words) and not words[i].startswith("-"):
                    value = words[i]
                    i += 1
            elif eq:
                raise UsageError(f"option {name} takes no value")
            _apply(opts, name, spec, value)
            continue
        if word.startswith("-") and word != "-":
            raise UsageError(f"unknown option {word}")
        # A word that is not an option.
        if verb_allowed and word in VERBS and opts.action == "run":
            verb_allowed = False
            takes = VERBS[word]
            opts.action = word
            if takes == "session":
                if i >= len(words):
                    raise UsageError(f"{word} needs a session id")
                opts.session = _int(words[i], f"{word}: session id")
                i += 1
            continue
        verb_allowed = False
        if opts.action in ("run", "submit") and opts.script is None and opts.source is None:
            if opts.simple_event is None:
                opts.script = word
                continue
        if opts.action in ("compile", "disasm") and opts.script is None:
            opts.script = word
            continue
        if opts.action in ("run", "submit"):
            opts.script_args.append(word)
            continue
        raise UsageError(f"unexpected argument {word!r}")
    _check(opts)
    return opts


def _apply(opts: Options, name: str, spec: OptionSpec, value: str | None) -> None:
    if spec.action:
        if opts.action not in ("run", spec.action):
            raise UsageError(f"option {name} cannot be combined with {opts.action}")
        opts.action = spec.action
    if not spec.attr:
        return
    if spec.value == "int":
        setattr(opts, spec.attr, _int(value, f"option {name}"))
    elif spec.value:
        setattr(opts, spec.attr, value)
    else:
        setattr(opts, spec.attr, True)


def _int(text: str | None, what: str) -> int:
    try:
        number = int(text or "", 10)
    except ValueError:
        raise UsageError(f"{what}: expected a number, got {text!r}") from None
    if number < 0:
        raise UsageError(f"{what}: expected a non-negative number, got {number}")
    return number


def _check(opts: Options) -> None:
    """Combinations the table alone cannot rule out."""
    sources = [s for s in (opts.script, opts.source, opts.simple_event) if s is not None]
    if opts.action in ("run", "submit"):
        if not sources:
            raise UsageError("no script: give a script file, -e 'one-liner' or -s EVENT")
        if len(sources) > 1 and opts.script is not None:
            raise UsageError("give one of a script file, -e and -s")
        if opts.source is not None and opts.simple_event is not None:
            raise UsageError("give one of -e and -s")
        if opts.command and opts.trace_pid is not None:
            raise UsageError("-p and -- cmd cannot be combined")
        if opts.command and opts.detach:
            raise UsageError("--detach and -- cmd cannot be combined")
    elif opts.action == "compile":
        if opts.script is None and opts.source is None:
            raise UsageError("compile needs a script")
        if not opts.output:
            raise UsageError("compile needs -o FILE")
    elif opts.action == "disasm":
        if opts.script is None and opts.source is None:
            raise UsageError("disasm needs a file")
    elif opts.action in ("functions", "markers") and not opts.script:
        raise UsageError("-lf and -lm need a binary")


# --- building the program ----------------------------------------------------


class ScriptError(Exception):
    """The script cannot be turned into a program: exit status and message."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def script_name(opts: Options) -> str:
    """arg[0]: the script path, or "(command line)" for -e and -s."""
    return opts.script if opts.script is not None else COMMAND_LINE_NAME


def load_program(opts: Options):
    """The Program the options describe: compiled from source, or decoded
    from a .kpc file.  Raises ScriptError."""
    if opts.simple_event is not None:
        return _compile(simple_tracing_source(opts.simple_event), COMMAND_LINE_NAME)
    if opts.source is not None:
        return _compile(opts.source, COMMAND_LINE_NAME)
    path = opts.script
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ScriptError(f"cannot open {path}: {exc.strerror}", EXIT_FAILED) from None
    if is_bytecode(path, data):
        from protocol.bytecode.encoding import DecodeError, decode

        try:
            return decode(data)
        except DecodeError as exc:
            raise ScriptError(f"{path}: not valid ktap bytecode: {exc}", EXIT_FAILED) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScriptError(f"{path}: not UTF-8 text: {exc}", EXIT_COMPILE) from None
    return _compile(text, path)


def simple_tracing_source(event: str) -> str:
    """ktap -s: print every hit of EVENT (the 0.4 form, with built-in variables)."""
    return f"trace {event} {{ print(cpu, tid, execname, argstr) }}\n"


def is_bytecode(path: str, data: bytes) -> bool:
    """A .kpc file, or any file that starts like encoded bytecode (a msgpack
    map whose first bytes name the ktap magic), so `ktapctl prog` works too."""
    return path.endswith(BYTECODE_SUFFIX) or (
        data[:1] in (b"\x84", b"\x85", b"\x86") and b"ktap-bytecode" in data[:32]
    )


def _compile(text: str, name: str):
    # Run again, a script's bytecode comes from the per-user cache without
    # importing the compiler (ktapctl/program_cache.py says when it is used).
    from ktapctl import program_cache

    program = program_cache.load(text, name)
    if program is not None:
        return program
    from ktapctl.lang import CompileError, compile_source

    try:
        program = compile_source(text, name)
    except CompileError as exc:
        raise ScriptError(str(exc), EXIT_COMPILE) from None
    program_cache.store(text, name, program)
    return program


# --- main ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run ktapctl with ``argv``; returns the exit status.

    Without ``argv`` this is the program itself (the console script): the
    words come from sys.argv, and once the output is flushed the process
    ends with os._exit.  The interpreter's own teardown (freeing the
    compiler's and the parser's objects) took 15-20 ms of every run, and
    nothing is left to finalize: the -o file is closed, the workload
    reaped, the connection closed."""
    if argv is None:
        _exit_now(_main(sys.argv[1:]))
    return _main(list(argv))


def _exit_now(status: int) -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    except (OSError, ValueError):
        pass
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(status)


def _main(words: list[str]) -> int:
    try:
        opts = parse(words)
    except UsageError as exc:
        _say(f"{exc}\n{USAGE.splitlines()[0]}\n(ktapctl -h for help)")
        return EXIT_USAGE
    try:
        return _dispatch(opts)
    except ScriptError as exc:
        if exc.status == EXIT_COMPILE:
            sys.stderr.write(str(exc).rstrip("\n") + "\n")
        else:
            _say(str(exc))
        return exc.status
    except BrokenPipeError:
        # `ktapctl ... | head`: the reader left; that is not our error.
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _dispatch(opts: Options) -> int:
    if opts.action == "help":
        sys.stdout.write(USAGE)
        return EXIT_OK
    if opts.action == "version":
        sys.stdout.write(version_text())
        return EXIT_OK
    if opts.action == "compile":
        return _compile_to_file(opts)
    if opts.action == "disasm" or (opts.action in ("run", "submit") and opts.print_bytecode):
        from protocol.bytecode.disasm import disassemble

        sys.stdout.write(disassemble(load_program(opts)))
        return EXIT_OK
    from ktapctl import client  # msgpack and the protocol load here, not for -V

    if opts.action in ("run", "submit"):
        program = load_program(opts)
        return client.run_program(program, opts)
    return client.run_request(opts)


def _compile_to_file(opts: Options) -> int:
    from protocol.bytecode.encoding import encode

    data = encode(load_program(opts))
    try:
        fd = os.open(opts.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise ScriptError(f"cannot write {opts.output}: {exc.strerror}", EXIT_FAILED) from None
    return EXIT_OK


def version_text() -> str:
    from ktapctl import __version__

    return f"ktapctl {__version__} (ktap language 0.4, protocol 1)\n"


def _say(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")


def _silence_stdout() -> None:
    # After EPIPE, Python would complain again when it flushes stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
