"""Compile-time diagnostics: where a problem is and how to show it.

Every check in the compiler reports through ``Diagnostic`` values; the
public entry point raises one ``CompileError`` holding all of them.  The
rendered form is the one compilers have taught people to read::

    script.kp:3:9: error: unknown name 'coutn'
        print(coutn)
              ^~~~~

This module must not import lark or anything outside the standard library:
the parser converts lark's exceptions into Diagnostics before they get here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A region of the source: 1-based line and column, end column exclusive.

    ``end_line``/``end_col`` may equal ``line``/``col`` for a point (such as
    the end of the file)."""

    line: int
    col: int
    end_line: int
    end_col: int

    @staticmethod
    def point(line: int, col: int) -> Span:
        return Span(line, col, line, col + 1)

    def to(self, other: Span) -> Span:
        """The span from the start of self to the end of other."""
        return Span(self.line, self.col, other.end_line, other.end_col)


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Span
    severity: str = "error"

    def render(self, filename: str, source_lines: list[str]) -> str:
        sp = self.span
        head = f"{filename}:{sp.line}:{sp.col}: {self.severity}: {self.message}"
        if not 1 <= sp.line <= len(source_lines):
            return head
        text = source_lines[sp.line - 1]
        start = max(sp.col - 1, 0)
        # A span that runs past its first line is underlined to the end of it.
        end = sp.end_col - 1 if sp.end_line == sp.line else len(text)
        width = max(end - start, 1)
        # Tabs stay tabs under the source line so the caret lines up.
        indent = "".join(c if c == "\t" else " " for c in text[:start])
        indent += " " * (start - len(indent))
        caret = indent + "^" + "~" * (width - 1)
        return f"{head}\n{text}\n{caret}"


class CompileError(Exception):
    """The script did not compile; ``diagnostics`` says every reason found."""

    def __init__(self, diagnostics: list[Diagnostic], filename: str, source: str):
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.span.line, d.span.col))
        self.filename = filename
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        lines = self.source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return "\n".join(d.render(self.filename, lines) for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()
