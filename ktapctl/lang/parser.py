"""Parsing: source text -> ast.Chunk, or Diagnostics that a person can read.

The grammar lives in grammar.lark and is run by lark's LALR parser fed by
our own lexer (lexer.py says why).  The lark parser is built once per
process and its tables are cached on disk (``$XDG_CACHE_HOME/ktap``), so a
one-liner compiles in milliseconds; lark itself is imported only on the
first compile.  The tree is converted to ast nodes right here, so no lark
type leaves this module.

Syntax errors are rewritten from lark's "unexpected token, expected one of
{...}" into ktap words: "expected ')' after condition", "expected '{' to
start the block of 'trace'", "unexpected 'else'".  The table ``_BLOCK_OWNER``
names what a missing '{' belongs to.  After a syntax error, parsing starts
again at the next top-level statement (when braces balance up to it), so
one run reports the errors of several statements without a cascade.

This module must not import trio, ktapd or the rest of ktapctl.
"""

from __future__ import annotations

import os
from pathlib import Path

import lark

from ktapctl.lang import ast
from ktapctl.lang.diagnostics import Diagnostic, Span
from ktapctl.lang.lexer import TOKEN_TEXT, Lexer, LexError, normalize_newlines, parse_number

GRAMMAR_PATH = Path(__file__).with_name("grammar.lark")


class ParseFailed(Exception):
    def __init__(self, diagnostics: list[Diagnostic]):
        super().__init__(diagnostics[0].message)
        self.diagnostics = diagnostics


def parse(source: str, filename: str = "(command line)") -> ast.Chunk:
    """Parse a script; raises ParseFailed with the syntax errors."""
    tree, error = _parse_tree(source)
    if error is not None:
        raise ParseFailed([error] + _later_syntax_errors(source, error))
    builder = _Builder()
    chunk = builder.chunk(tree)
    if builder.diagnostics:
        raise ParseFailed(builder.diagnostics)
    return chunk


def _parse_tree(source: str):
    """(lark tree, None) or (None, the first syntax error)."""
    lexer = Lexer(source)
    _Current.lexer = lexer
    try:
        return _lark().parse(source), None
    except LexError as exc:
        return None, Diagnostic(exc.message, exc.span)
    except lark.exceptions.UnexpectedToken as exc:
        return None, _explain(exc, lexer.tokens, lexer.text)
    finally:
        _Current.lexer = None


# Statements that can only start at the top level or a block's start: after
# a syntax error, parsing resumes at the next of these found at brace depth 0
# at the start of a line.
_RESYNC = {"_TRACE", "_TRACE_END", "_TICK", "_PROFILE", "_FUNCTION", "_VAR", "_IF",
           "_WHILE", "_FOR"}
_MAX_SYNTAX_ERRORS = 10


def _later_syntax_errors(source: str, first: Diagnostic) -> list[Diagnostic]:
    """Errors after the first one, found by parsing again from the next
    top-level statement.  Only where braces balance up to that statement,
    so a missing '}' gives one error, not a cascade."""
    source = normalize_newlines(source)  # offsets below are in the lexer's text
    found: list[Diagnostic] = []
    after = (first.span.line, first.span.col)
    while len(found) < _MAX_SYNTAX_ERRORS - 1:
        offset = _resync_offset(source, after)
        if offset is None:
            break
        # Blank out what came before, keeping newlines, so positions stay right.
        rest = "".join(c if c in "\n\ufeff" else " " for c in source[:offset]) + source[offset:]
        _, error = _parse_tree(rest)
        if error is None:
            break
        found.append(error)
        after = (error.span.line, error.span.col)
    return found


def _resync_offset(source: str, after: tuple[int, int]) -> int | None:
    lexer = Lexer(source)
    depth = 0
    previous_line = 0
    line_starts = [0] + [i + 1 for i, c in enumerate(lexer.text) if c == "\n"]
    try:
        for tok in lexer:
            starts_line = tok.line != previous_line
            previous_line = tok.line
            if tok.type == "_LBRACE":
                depth += 1
            elif tok.type == "_RBRACE":
                depth -= 1
            elif (depth == 0 and starts_line and tok.type in _RESYNC
                  and (tok.line, tok.column) > after):
                return line_starts[tok.line - 1] + tok.column - 1
    except LexError:
        return None
    return None


# --- the lark parser, built once ------------------------------------------
_PARSER = None


class _Current:
    """The Lexer of the parse in progress (lark hands our adapter only the text)."""

    lexer: Lexer | None = None


class LarkLexer(lark.lexer.Lexer):
    """Adapter: lark asks for the tokens of the text; we give it our lexer's."""

    def __init__(self, lexer_conf):
        pass

    def lex(self, data):
        lexer = _Current.lexer
        if lexer is None:
            lexer = Lexer(data)
        return iter(lexer)


def _cache_file() -> str | bool:
    """Where lark keeps the analysed grammar, or False to go without.

    lark's cache is a pickle, and loading a pickle runs code: with
    ``sudo ktapctl`` a cache another user could write would run their code
    as root.  So the directory and the file must belong to us and be
    writable by nobody else; otherwise the grammar is analysed afresh
    (about 0.2 s) rather than trusted."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "ktap")
    path = os.path.join(directory, f"grammar-lark{lark.__version__}.cache")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _private(os.stat(directory)):
            return False
        if os.path.lexists(path) and not _private(os.lstat(path)):
            return False
    except OSError:
        return False
    return path if os.access(directory, os.W_OK) else False


def _private(st: os.stat_result) -> bool:
    import stat

    return (st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            and not stat.S_ISLNK(st.st_mode))


def _lark():
    global _PARSER
    if _PARSER is None:
        _PARSER = lark.Lark(
            GRAMMAR_PATH.read_text(),
            parser="lalr",
            lexer=LarkLexer,
            propagate_positions=True,
            maybe_placeholders=False,
            cache=_cache_file(),
        )
    return _PARSER


# --- syntax errors in words ------------------------------------------------
# For an expected '{': the keyword whose block it is, and how to say it.
_BLOCK_OWNER = {
    "_TRACE": "the block of 'trace'",
    "_TRACE_END": "the block of 'trace_end'",
    "_TICK": "the block of 'tick'",
    "_PROFILE": "the block of 'profile'",
    "_IF": "the block of 'if'",
    "_ELSEIF": "the block of 'elseif'",
    "_ELSE": "the block of 'else'",
    "_WHILE": "the body of 'while'",
    "_FOR": "the body of 'for'",
    "_FUNCTION": "the body of the function",
}
_CONDITION_KEYWORDS = {"_IF", "_ELSEIF", "_WHILE"}


def _describe(tok) -> str:
    if tok.type == "$END":
        return "end of the script"
    if tok.type == "NAME":
        return f"name '{tok.value}'"
    if tok.type == "NUMBER":
        return f"number {tok.value}"
    if tok.type == "STRING":
        return "string"
    if tok.type == "EVENTVAR":
        return f"'{tok.value}'"
    return TOKEN_TEXT.get(tok.type, repr(tok.value))


def _token_span(tok, tokens) -> Span:
    if tok.type == "$END":
        if tokens:
            last = tokens[-1]
            return Span.point(last.end_line, last.end_column)
        return Span.point(1, 1)
    return Span(tok.line, tok.column, tok.line,
                tok.end_column if tok.end_line == tok.line else tok.column + 1)


def _explain(exc, tokens, text: str) -> Diagnostic:
    tok = exc.token
    expected = set(exc.expected)
    # The tokens before the offending one (the lexer may have run ahead by one).
    before = tokens[:-1] if tokens and tokens[-1] is tok else list(tokens)
    span = _token_span(tok, before)
    unexpected = f"unexpected {_describe(tok)}"

    hint = _hint(tok, before, text)
    if hint:
        return Diagnostic(hint, span)
    if tok.type in ("EVENTVAR", "_ARGS") and "NAME" in expected and "NUMBER" not in expected:
        return Diagnostic(f"'{tok.value}' is a built-in variable: it cannot be declared or "
                          "assigned", span)
    if "_RPAR" in expected and _open_paren_owner(before) in _CONDITION_KEYWORDS:
        return Diagnostic(f"expected ')' after condition, found {_describe(tok)}", span)
    if "_LPAR" in expected and before and before[-1].type in _CONDITION_KEYWORDS:
        word = TOKEN_TEXT[before[-1].type]
        return Diagnostic(f"expected '(' after {word}: conditions take parentheses", span)
    if tok.type == "EVENTSPEC":
        return Diagnostic("expected '{' to start the block of 'trace' (or ',' before another "
                          f"event), found '{tok.value}'", span)
    if "_LBRACE" in expected and not expected & {"NAME", "NUMBER", "STRING", "_FUNCTION"}:
        owner = _block_owner(before)
        if owner:
            return Diagnostic(f"expected '{{' to start {owner}, found {_describe(tok)}", span)
    if "EVENTSPEC" in expected:
        return Diagnostic("expected an event specification after 'trace'", span)
    if "INTERVAL" in expected:
        return Diagnostic("expected an interval such as '1s' or '100ms'", span)
    if tok.type in ("_ELSE", "_ELSEIF"):
        return Diagnostic(f"{unexpected}: it must follow the block of an 'if'", span)
    if tok.type == "_RBRACE" and "_RBRACE" not in expected and _brace_depth(before) == 0:
        return Diagnostic(f"{unexpected}: no block is open here", span)
    if tok.type == "$END" and "_RBRACE" in expected:
        return Diagnostic("unexpected end of the script: expected '}' to close a block", span)
    if "NUMBER" in expected and "_RPAR" not in expected:
        return Diagnostic(f"{unexpected}; expected an expression", span)
    wanted = sorted({TOKEN_TEXT.get(e, e) for e in expected if not e.startswith("$")})
    if wanted and len(wanted) <= 4:
        return Diagnostic(f"{unexpected}; expected {_or_list(wanted)}", span)
    owner = _open_paren_owner(before) if "_RPAR" in expected else None
    if owner == "_FOR" and tok.type == "_LBRACE":
        return Diagnostic("expected ')' to close 'for (...)', found '{'", span)
    if owner in ("NAME", "_RPAR", "_RSQB"):  # the '(' of a call
        return Diagnostic(f"{unexpected}; expected ')'", span)
    return Diagnostic(unexpected, span)


def _hint(tok, before, text: str) -> str | None:
    """Mistakes people bring from C and Lua, recognised by the tokens."""
    prev = before[-1] if before else None
    if prev is not None and prev.type == "_ELSE" and tok.type == "_IF":
        return "expected '{' after 'else'; for another condition write 'elseif (...)'"
    if prev is not None and prev.type == "NAME" and prev.value == "local" and tok.type == "NAME":
        return "'local' is not a ktap word: declare variables with 'var'"
    if tok.type == "_MINUS" and text.startswith("=", tok.end_pos):
        return "ktap has '+=' but no '-=': write x = x - y"
    if tok.type == "_SEMI" and _open_paren_owner(before) == "_FOR":
        return "unexpected ';': ktap's for is 'for (i = first, last[, step])', not C's"
    return None


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _brace_depth(tokens) -> int:
    return sum((t.type == "_LBRACE") - (t.type == "_RBRACE") for t in tokens)


def _open_paren_owner(tokens) -> str | None:
    """The token before the innermost '(' still open at the end of tokens."""
    depth = 0
    for i in range(len(tokens) - 1, -1, -1):
        t = tokens[i].type
        if t == "_RPAR":
            depth += 1
        elif t == "_LPAR":
            if depth == 0:
                return tokens[i - 1].type if i else None
            depth -= 1
        elif t in ("_LBRACE", "_RBRACE", "_SEMI"):
            return None
    return None


def _block_owner(tokens) -> str | None:
    """Which keyword's block a '{' was expected for, scanning backwards."""
    depth = 0
    for tok in reversed(tokens):
        t = tok.type
        if t in ("_RPAR", "_RSQB"):
            depth += 1
        elif t in ("_LPAR", "_LSQB"):
            depth -= 1
        elif depth == 0 and t in _BLOCK_OWNER:
            return _BLOCK_OWNER[t]
        elif t in ("_LBRACE", "_RBRACE", "_SEMI"):
            return None
    return None


# --- lark tree -> ast -------------------------------------------------------
def _span(item) -> Span:
    """Span of a lark Tree (through its meta) or Token."""
    if hasattr(item, "meta"):
        m = item.meta
        if getattr(m, "empty", True):
            return Span.point(1, 1)
        return Span(m.line, m.column, m.end_line, m.end_column)
    return Span(item.line, item.column, item.end_line, item.end_column)


class _Builder:
    """Walks the lark tree once; each rule alias has a method of that name."""

    def __init__(self):
        self.diagnostics: list[Diagnostic] = []

    def chunk(self, tree) -> ast.Chunk:
        chunk_tree = tree.children[0]
        stats = tuple(self.stat(s) for s in chunk_tree.children)
        span = _span(chunk_tree)
        return ast.Chunk(ast.Block(stats, span))

    def block(self, tree) -> ast.Block:
        chunk_tree = tree.children[0]
        return ast.Block(tuple(self.stat(s) for s in chunk_tree.children), _span(tree))

    # statements
    def stat(self, tree) -> ast.Stat:
        return getattr(self, "s_" + tree.data)(tree, _span(tree), tree.children)

    def s_local(self, tree, span, ch):
        names = tuple(self.param(t) for t in ch[0].children)
        values = self.exps(ch[1]) if len(ch) > 1 else ()
        return ast.Local(span, names, values)

    def s_local_function(self, tree, span, ch):
        name = self.param(ch[0])
        return ast.LocalFunction(span, name, self.funcbody(ch[1], name.name, span))

    def s_if_stat(self, tree, span, ch):
        tests = [(self.exp(ch[0].children[0]), self.block(ch[1]))]
        orelse = None
        for item in ch[2:]:
            if item.data == "elseif":
                tests.append((self.exp(item.children[0].children[0]), self.block(item.children[1])))
            else:
                orelse = self.block(item)
        return ast.If(span, tuple(tests), orelse)

    def s_while_stat(self, tree, span, ch):
        return ast.While(span, self.exp(ch[0].children[0]), self.block(ch[1]))

    def s_for_num(self, tree, span, ch):
        var = self.param(ch[0])
        start, stop = self.exp(ch[1]), self.exp(ch[2])
        step = self.exp(ch[3]) if len(ch) == 5 else None
        return ast.ForNum(span, var, start, stop, step, self.block(ch[-1]))

    def s_for_in(self, tree, span, ch):
        key = self.param(ch[0])
        value = self.param(ch[1]) if len(ch) == 4 else None
        return ast.ForIn(span, key, value, self.exp(ch[-2]), self.block(ch[-1]))

    def s_break_stat(self, tree, span, ch):
        return ast.Break(span)

    def s_return_stat(self, tree, span, ch):
        return ast.Return(span, self.exp(ch[0]) if ch else None)

    def s_trace_stat(self, tree, span, ch):
        events = tuple(ast.EventSpec(str(t), _span(t)) for t in ch[0].children)
        filt = None
        if len(ch) == 3:
            filt = ast.EventSpec(str(ch[1]), _span(ch[1]))
        return ast.Trace(span, events, filt, self.block(ch[-1]))

    def s_trace_end_stat(self, tree, span, ch):
        return ast.TraceEnd(span, self.block(ch[0]))

    def s_tick_stat(self, tree, span, ch):
        return ast.Timer(span, "tick", ast.EventSpec(str(ch[0]), _span(ch[0])), self.block(ch[1]))

    def s_profile_stat(self, tree, span, ch):
        return ast.Timer(span, "profile", ast.EventSpec(str(ch[0]), _span(ch[0])),
                         self.block(ch[1]))

    def s_assign(self, tree, span, ch):
        targets = tuple(self.exp(t) for t in ch[0].children)
        return ast.Assign(span, targets, self.exps(ch[1]))

    def s_add_assign(self, tree, span, ch):
        return ast.AddAssign(span, self.exp(ch[0]), self.exp(ch[1]))

    def s_agg_assign(self, tree, span, ch):
        return ast.Aggregate(span, self.exp(ch[0]), self.exp(ch[1]))

    def s_expr_stat(self, tree, span, ch):
        expr = self.exp(ch[0])
        if isinstance(expr, ast.Name) and expr.name == "local":
            self.diagnostics.append(Diagnostic(
                "'local' is not a ktap word: declare variables with 'var'", span))
        elif not isinstance(expr, ast.Call):
            self.diagnostics.append(Diagnostic(
                "this expression is not a statement: expected an assignment or a call", span))
        return ast.ExprStat(span, expr)

    # pieces
    def param(self, tok) -> ast.Param:
        return ast.Param(str(tok), _span(tok))

    def exps(self, tree) -> tuple[ast.Expr, ...]:
        return tuple(self.exp(e) for e in tree.children)

    def funcbody(self, tree, name: str, span: Span) -> ast.FunctionExpr:
        ch = tree.children
        params = tuple(self.param(t) for t in ch[0].children) if len(ch) == 2 else ()
        return ast.FunctionExpr(span, name, params, self.block(ch[-1]))

    # expressions
    def exp(self, tree) -> ast.Expr:
        return getattr(self, "e_" + tree.data)(tree, _span(tree), tree.children)

    def e_number(self, tree, span, ch):
        return ast.Number(span, parse_number(str(ch[0])))

    def e_string(self, tree, span, ch):
        return ast.String(span, str(ch[0]))

    def e_nil(self, tree, span, ch):
        return ast.Nil(span)

    def e_true(self, tree, span, ch):
        return ast.Bool(span, True)

    def e_false(self, tree, span, ch):
        return ast.Bool(span, False)

    def e_event_var(self, tree, span, ch):
        return ast.EventVar(span, str(ch[0]))

    def e_args_field(self, tree, span, ch):
        return ast.ArgsField(span, str(ch[0]))

    def e_function(self, tree, span, ch):
        return self.funcbody(ch[0], "<anonymous>", span)

    def e_table(self, tree, span, ch):
        fields = []
        for f in ch:
            if f.data == "keyed_field":
                fields.append(ast.TableField(self.exp(f.children[0]), self.exp(f.children[1])))
            elif f.data == "named_field":
                tok = f.children[0]
                fields.append(ast.TableField(ast.String(_span(tok), str(tok)),
                                             self.exp(f.children[1])))
            else:
                fields.append(ast.TableField(None, self.exp(f.children[0])))
        return ast.Table(span, tuple(fields))

    def e_name(self, tree, span, ch):
        return ast.Name(span, str(ch[0]))

    def e_paren(self, tree, span, ch):
        return self.exp(ch[0])

    def e_field(self, tree, span, ch):
        return ast.Field(span, self.exp(ch[0]), str(ch[1]), _span(ch[1]))

    def e_index(self, tree, span, ch):
        return ast.Index(span, self.exp(ch[0]), self.exp(ch[1]))

    def e_call(self, tree, span, ch):
        args = self.exps(ch[1]) if len(ch) == 2 else ()
        return ast.Call(span, self.exp(ch[0]), args)

    def e_neg(self, tree, span, ch):
        operand = self.exp(ch[0])
        if isinstance(operand, ast.Number):  # fold -<literal> (wraps like C)
            value = -operand.value
            if value > (1 << 63) - 1:
                value -= 1 << 64
            return ast.Number(span, value)
        return ast.Unary(span, "neg", operand)

    def e_not_op(self, tree, span, ch):
        return ast.Unary(span, "not", self.exp(ch[0]))

    def _binary(self, tree, span, ch):
        return ast.Binary(span, tree.data, self.exp(ch[0]), self.exp(ch[1]))

    e_add = e_sub = e_mul = e_div = e_mod = e_concat = _binary
    e_eq = e_ne = e_lt = e_le = e_gt = e_ge = _binary

    def e_and_op(self, tree, span, ch):
        return ast.Binary(span, "and", self.exp(ch[0]), self.exp(ch[1]))

    def e_or_op(self, tree, span, ch):
        return ast.Binary(span, "or", self.exp(ch[0]), self.exp(ch[1]))
