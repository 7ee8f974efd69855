"""The ktap lexer: source text -> tokens for the LALR parser in grammar.lark.

Why hand-written rather than lark's regex lexer: three parts of ktap's
lexical grammar do not fit a table of regular expressions.

* Long brackets (``[==[ ... ]==]`` strings and ``--[[ ... ]]`` comments)
  close only on the same number of ``=``.
* After ``trace`` the event specification is raw text up to the block's
  ``{`` (``probe:/bin/bash:readline%return arg1=%ax``), split on commas,
  with an optional trailing ``/FILTER/``; after ``tick``/``profile`` and
  ``-`` the interval is raw text too (``1s``, ``100ms``).
* Errors need plain words at the right column: "unfinished string",
  "malformed number", "invalid escape sequence".

Token types are the terminal names declared in grammar.lark; ``TOKEN_TEXT``
is the one table that says how each is shown in error messages.  The lexer
decodes string escapes and keeps the number text (the parser converts it),
so no later stage looks at raw source again.

This module must not import anything but lark's Token class and the
standard library; it knows nothing about the grammar's rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from lark import Token

from ktapctl.lang.diagnostics import Span

# Punctuation, longest first so that "<<<" wins over "<" and ".." over ".".
PUNCTUATION: dict[str, str] = {
    "<<<": "_AGG",
    "+=": "_PLUSEQ",
    "==": "_EQ",
    "!=": "_NE",
    "<=": "_LE",
    ">=": "_GE",
    "&&": "_AND",
    "||": "_OR",
    "..": "_CONCAT",
    "+": "_PLUS",
    "-": "_MINUS",
    "*": "_STAR",
    "/": "_SLASH",
    "%": "_PERCENT",
    "<": "_LT",
    ">": "_GT",
    "=": "_ASSIGN",
    "!": "_BANG",
    "(": "_LPAR",
    ")": "_RPAR",
    "{": "_LBRACE",
    "}": "_RBRACE",
    "[": "_LSQB",
    "]": "_RSQB",
    ";": "_SEMI",
    ":": "_COLON",
    ",": "_COMMA",
    ".": "_DOT",
}

KEYWORDS: dict[str, str] = {
    word: "_" + word.upper()
    for word in (
        "trace trace_end tick profile var function return if elseif else while "
        "for in break nil true false args"
    ).split()
}
# Built-in event variables are reserved words too; they share one token type
# whose value is the name.
EVENT_VARIABLE_WORDS = frozenset(
    ["argstr", "probename", "pid", "tid", "uid", "cpu", "execname"]
    + [f"arg{i}" for i in range(10)]
)

# How each token type is named in messages ("expected ')' ...").
TOKEN_TEXT: dict[str, str] = (
    {name: f"'{text}'" for text, name in PUNCTUATION.items()}
    | {name: f"'{word}'" for word, name in KEYWORDS.items()}
    | {
        "NAME": "a name",
        "NUMBER": "a number",
        "STRING": "a string",
        "EVENTVAR": "a built-in variable",
        "EVENTSPEC": "an event specification",
        "FILTER": "a filter",
        "INTERVAL": "an interval",
        "$END": "the end of the script",
    }
)

_PUNCT_RE = re.compile("|".join(re.escape(p) for p in PUNCTUATION))
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Like Lua (and ktap's lexer), a number runs over every character that could
# continue it, so "1.5", "1e3" and "08" come out whole and are then refused.
_NUMBER_RE = re.compile(r"[0-9][0-9A-Za-z_.]*")
_SPACE_RE = re.compile(r"[ \t\v\f]+")
_LONG_OPEN_RE = re.compile(r"\[(=*)\[")
_INTERVAL_RE = re.compile(r"[^\s{}]+")
# The characters of a short string up to its quote, a backslash or a newline.
_PLAIN_RUN = {q: re.compile(rf"[^{q}\\\n]*") for q in "'\""}
_SHORT_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", '"': '"', "'": "'", "\n": "\n",
}
U64_MAX = (1 << 64) - 1


class LexError(Exception):
    def __init__(self, message: str, span: Span):
        super().__init__(message)
        self.message = message
        self.span = span


def parse_number(text: str) -> int | None:
    """C strtoul(text, base 0) on the whole text, as an int64; None if malformed.

    Too-large values saturate to 0xffffffffffffffff, which is -1 as int64."""
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        value = int(text[2:], 16)
    elif re.fullmatch(r"0[0-7]*", text):
        value = int(text, 8)
    elif re.fullmatch(r"[1-9][0-9]*", text):
        value = int(text)
    else:
        return None
    value = min(value, U64_MAX)
    return value - (1 << 64) if value >= 1 << 63 else value


class Lexer:
    """Turns one source text into Tokens; ``tokens`` keeps the ones produced
    so far, which the parser reads to explain a syntax error."""

    def __init__(self, text: str):
        self.text = normalize_newlines(text)
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self.tokens: list[Token] = []

    # --- positions -------------------------------------------------------
    def _col(self, pos: int) -> int:
        return pos - self.line_start + 1

    def _advance_to(self, pos: int) -> None:
        """Move to pos, counting the newlines passed over."""
        text = self.text
        nl = text.count("\n", self.pos, pos)
        if nl:
            self.line += nl
            self.line_start = text.rfind("\n", self.pos, pos) + 1
        self.pos = pos

    def _token(self, kind: str, value: str, start: int, line: int, col: int) -> Token:
        tok = Token(kind, value, start, line, col, self.line, self._col(self.pos), self.pos)
        self.tokens.append(tok)
        return tok

    def _error(self, message: str, start: int, line: int | None = None,
               col: int | None = None, end: int | None = None) -> LexError:
        line = self.line if line is None else line
        col = self._col(start) if col is None else col
        end_col = col + max((end if end is not None else start + 1) - start, 1)
        return LexError(message, Span(line, col, line, end_col))

    # --- main loop -------------------------------------------------------
    def __iter__(self) -> Iterator[Token]:
        text = self.text
        if text.startswith("\ufeff"):  # a UTF-8 byte order mark, as ktap skipped it
            self.pos = self.line_start = 1
        if text.startswith("#!", self.pos):
            self._skip_line()
        while True:
            self._skip_space_and_comments()
            if self.pos >= len(text):
                return
            start, line, col = self.pos, self.line, self._col(self.pos)
            ch = text[start]
            if ch.isascii() and (ch.isalpha() or ch == "_"):
                m = _NAME_RE.match(text, start)
                word = m.group()
                self._advance_to(m.end())
                if word in KEYWORDS:
                    yield self._token(KEYWORDS[word], word, start, line, col)
                    if word == "trace":
                        yield from self._event_specs()
                    elif word in ("tick", "profile"):
                        yield from self._interval()
                elif word in EVENT_VARIABLE_WORDS:
                    yield self._token("EVENTVAR", word, start, line, col)
                else:
                    yield self._token("NAME", word, start, line, col)
            elif "0" <= ch <= "9":
                m = _NUMBER_RE.match(text, start)
                if parse_number(m.group()) is None:
                    raise self._error("malformed number", start, end=m.end())
                self._advance_to(m.end())
                yield self._token("NUMBER", m.group(), start, line, col)
            elif ch in "\"'":
                value = self._short_string(ch)
                yield self._token("STRING", value, start, line, col)
            elif ch == "[" and (m := _LONG_OPEN_RE.match(text, start)):
                value = self._long_bracket(m, "string")
                yield self._token("STRING", value, start, line, col)
            elif ch == "[" and text.startswith("[=", start):
                raise self._error("invalid long string delimiter", start)
            elif m := _PUNCT_RE.match(text, start):
                self._advance_to(m.end())
                yield self._token(PUNCTUATION[m.group()], m.group(), start, line, col)
            else:
                raise self._error(f"unexpected character {ch!r}", start)

    def _skip_line(self) -> None:
        end = self.text.find("\n", self.pos)
        self._advance_to(len(self.text) if end < 0 else end)

    def _skip_space_and_comments(self) -> None:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\n":
                self._advance_to(self.pos + 1)
            elif m := _SPACE_RE.match(text, self.pos):
                self.pos = m.end()
            elif ch == "#":
                self._skip_line()
            elif text.startswith("--", self.pos):
                m = _LONG_OPEN_RE.match(text, self.pos + 2)
                if m:
                    self._long_bracket(m, "comment")
                else:
                    self._skip_line()
            else:
                return

    # --- strings ---------------------------------------------------------
    def _long_bracket(self, m: re.Match, what: str) -> str:
        """A [==[ ... ]==] string or comment body; the first newline is dropped."""
        start, line = self.pos, self.line
        close = "]" + m.group(1) + "]"
        end = self.text.find(close, m.end())
        if end < 0:
            raise self._error(f"unfinished long {what}", start, line=line,
                              end=m.end())
        body = self.text[m.end():end]
        if body.startswith("\n"):
            body = body[1:]
        self._advance_to(end + len(close))
        return body

    def _short_string(self, quote: str) -> str:
        text = self.text
        start = self.pos
        start_line, start_col = self.line, self._col(start)
        i = start + 1
        out: list[str] = []

        def unfinished() -> LexError:
            if self.line == start_line:
                return self._error("unfinished string", start, end=i)
            # after a backslash-newline: point at the opening quote
            return LexError("unfinished string", Span.point(start_line, start_col))

        while True:
            if i >= len(text) or text[i] == "\n":
                raise unfinished()
            ch = text[i]
            if ch == quote:
                i += 1
                break
            if ch != "\\":
                j = _PLAIN_RUN[quote].match(text, i).end()
                out.append(text[i:j])
                i = j
                continue
            esc = text[i + 1] if i + 1 < len(text) else ""
            if esc in _SHORT_ESCAPES:
                out.append(_SHORT_ESCAPES[esc])
                i += 2
                if esc == "\n":  # keep the line count right across the string
                    self._advance_to(i)
            elif esc == "x":
                digits = text[i + 2:i + 4]
                if not re.fullmatch(r"[0-9a-fA-F]{2}", digits):
                    raise self._error("invalid escape sequence: \\x needs two hex digits",
                                      i, col=self._col(i), end=i + 2)
                out.append(chr(int(digits, 16)))
                i += 4
            elif esc == "z":
                i += 2
                while i < len(text) and text[i] in " \t\v\f\r\n":
                    i += 1
                self._advance_to(i)
            elif esc.isdigit():
                m = re.compile(r"[0-9]{1,3}").match(text, i + 1)
                value = int(m.group())
                if value > 255:
                    raise self._error("invalid escape sequence: decimal escape above 255",
                                      i, col=self._col(i), end=m.end())
                out.append(chr(value))
                i = m.end()
            elif esc == "":
                raise unfinished()
            else:
                raise self._error(f"invalid escape sequence '\\{esc}'", i, col=self._col(i),
                                  end=i + 2)
        self._advance_to(i)
        return "".join(out)

    # --- raw text after `trace` and `tick`/`profile` --------------------
    def _event_specs(self) -> Iterator[Token]:
        """EVENTSPEC {',' EVENTSPEC} [FILTER], raw text up to the block's '{'.

        A '/' starts the filter when it cannot belong to a spec: for
        tracepoints any '/', for probe:/sdt: specs (whose paths hold '/')
        only a '/' after white space.  The filter closes at the last '/'
        before the '{'."""
        text = self.text
        region_end = text.find("{", self.pos)
        if region_end < 0:
            region_end = len(text)
        while True:
            self._skip_blanks(region_end)
            if self.pos >= region_end:
                return
            start, line, col = self.pos, self.line, self._col(self.pos)
            if text[start] == "/":
                close = text.rfind("/", start + 1, region_end)
                if close < 0:
                    raise self._error("unfinished filter: expected '/' to close it", start)
                self._advance_to(close + 1)
                tok = self._token("FILTER", text[start + 1:close], start, line, col)
                yield tok
                self._skip_blanks(region_end)
                if self.pos < region_end:
                    raise self._error("unexpected text after the filter (expected '{')",
                                      self.pos, end=region_end)
                return
            if text[start] == ",":
                self._advance_to(start + 1)
                yield self._token("_COMMA", ",", start, line, col)
                continue
            end = self._spec_end(start, region_end)
            if end == start:
                raise self._error(f"unexpected character {text[start]!r} in event specification",
                                  start)
            self._advance_to(end)
            yield self._token("EVENTSPEC", text[start:end], start, line, col)

    def _spec_end(self, start: int, region_end: int) -> int:
        text = self.text
        long_form = text.startswith(("probe:", "sdt:"), start)
        i = start
        while i < region_end:
            ch = text[i]
            if ch in ",\n" or (ch == "/" and not long_form):
                break
            if ch.isspace():
                if not long_form:
                    break
                j = i
                while j < region_end and text[j] in " \t":
                    j += 1
                if j >= region_end or text[j] in "/,\n":
                    break
                i = j
                continue
            i += 1
        return i

    def _skip_blanks(self, limit: int) -> None:
        """White space and whole-line comments between event specs."""
        text = self.text
        while self.pos < limit:
            if text[self.pos].isspace():
                self._advance_to(self.pos + 1)
            elif text[self.pos] == "#" or text.startswith("--", self.pos):
                end = text.find("\n", self.pos, limit)
                self._advance_to(limit if end < 0 else end)
            else:
                return

    def _interval(self) -> Iterator[Token]:
        """After tick/profile: '-' and the raw interval text ("1s", "100ms")."""
        self._skip_space_and_comments()
        start, line, col = self.pos, self.line, self._col(self.pos)
        if not self.text.startswith("-", self.pos):
            word = self.tokens[-1].value
            raise self._error(f"expected '-' and an interval after '{word}' (as in {word}-1s)",
                              start)
        self._advance_to(start + 1)
        yield self._token("_MINUS", "-", start, line, col)
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1
        m = _INTERVAL_RE.match(self.text, self.pos)
        if m:
            start, col = self.pos, self._col(self.pos)
            self._advance_to(m.end())
            yield self._token("INTERVAL", m.group(), start, line, col)


def normalize_newlines(text: str) -> str:
    """\\r\\n and lone \\r count as one newline, as in ktap."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text
