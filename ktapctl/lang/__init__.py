"""The ktap compiler: script text -> protocol.bytecode.Program.

A pure library (no I/O beyond lark's grammar cache, no trio, no daemon):

    compile_source(source, filename) -> Program     raises CompileError
    parse(source, filename) -> ast.Chunk            for tests and debugging

Stages: lexer.py + grammar.lark (parser.py) -> ast.py -> resolve.py (names,
checks, probe table) -> codegen.py (bytecode).  Each stage reports
Diagnostics; the first stage that has any stops the compile, and all of its
diagnostics are reported together.

This package must not import trio, ktapd or the rest of ktapctl.
"""

from __future__ import annotations

import gc
import sys
import threading
from typing import TYPE_CHECKING

from ktapctl.lang.diagnostics import CompileError, Diagnostic, Span
from protocol import limits

if TYPE_CHECKING:  # importing the bytecode package costs msgpack; compiling needs it anyway
    from protocol.bytecode.program import Program

__all__ = ["CompileError", "Diagnostic", "Span", "compile_source", "parse"]

# One compile at a time: the parser hands its lexer to lark through a
# module global, and compiling adjusts the recursion limit and the GC.
_LOCK = threading.RLock()

# Deeply nested source (a long `a + b + ...` chain, nested tables) is walked
# recursively; allow that much depth and turn anything deeper into an error.
_RECURSION_LIMIT = 20_000


def parse(source: str, filename: str = "(command line)"):
    """Source -> ast.Chunk; raises CompileError on syntax errors."""
    from ktapctl.lang import parser

    with _deep_recursion():
        try:
            return parser.parse(source, filename)
        except parser.ParseFailed as exc:
            raise CompileError(exc.diagnostics, filename, source) from None
        except RecursionError:
            raise CompileError([Diagnostic("script nested too deeply", Span.point(1, 1))],
                               filename, source) from None


def compile_source(source: str, filename: str = "(command line)") -> Program:
    """Compile a ktap script to a Program; raises CompileError."""
    from ktapctl.lang import codegen, resolve
    from protocol.bytecode.encoding import encode

    if len(filename) > limits.MAX_SOURCE_NAME:
        raise CompileError([Diagnostic(
            f"file name longer than {limits.MAX_SOURCE_NAME} characters", Span.point(1, 1))],
            filename[: limits.MAX_SOURCE_NAME], source)
    chunk = parse(source, filename)
    with _deep_recursion():
        try:
            res, diagnostics = resolve.resolve(chunk)
            if diagnostics:
                raise CompileError(diagnostics, filename, source)
            program = codegen.generate(chunk, res, filename)
        except codegen.LimitExceeded as exc:
            raise CompileError([exc.diagnostic], filename, source) from None
        except RecursionError:
            raise CompileError([Diagnostic("script nested too deeply", Span.point(1, 1))],
                               filename, source) from None
    size = len(encode(program))
    if size > limits.MAX_PROGRAM_BYTES:
        raise CompileError([Diagnostic(
            f"compiled program is {size} bytes, more than the limit of "
            f"{limits.MAX_PROGRAM_BYTES}", Span.point(1, 1))], filename, source)
    return program


class _deep_recursion:
    """Deep recursion allowed, and no cyclic GC: a compile makes many small
    objects and no cycles worth collecting, and collections over them made
    big scripts compile in more than linear time."""

    def __enter__(self):
        _LOCK.acquire()
        self.saved = sys.getrecursionlimit()
        sys.setrecursionlimit(max(self.saved, _RECURSION_LIMIT))
        self.gc_was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        sys.setrecursionlimit(self.saved)
        if self.gc_was_enabled:
            gc.enable()
        _LOCK.release()
        return False
