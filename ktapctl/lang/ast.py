"""The ktap syntax tree: frozen dataclasses, each with its source span.

The parser builds these from lark's tree and nothing of lark leaks out.
Later passes (resolve.py, codegen.py) never change a node: what they learn
about one (which variable a name means, whether a local is captured) they
keep in their own tables keyed by the node.

This module must not import lark or any other compiler module except
diagnostics (for Span).
"""

from __future__ import annotations

from dataclasses import dataclass

from ktapctl.lang.diagnostics import Span


# --- expressions ------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Expr:
    span: Span


@dataclass(frozen=True, eq=False)
class Nil(Expr):
    pass


@dataclass(frozen=True, eq=False)
class Bool(Expr):
    value: bool


@dataclass(frozen=True, eq=False)
class Number(Expr):
    value: int  # already an int64 (saturated and wrapped)


@dataclass(frozen=True, eq=False)
class String(Expr):
    value: str


@dataclass(frozen=True, eq=False)
class Name(Expr):
    name: str


@dataclass(frozen=True, eq=False)
class EventVar(Expr):
    name: str  # argstr, probename, pid, arg0 ...


@dataclass(frozen=True, eq=False)
class ArgsField(Expr):
    field: str  # args.NAME


@dataclass(frozen=True, eq=False)
class Index(Expr):
    obj: Expr
    key: Expr


@dataclass(frozen=True, eq=False)
class Field(Expr):
    """obj.name: a table lookup with a string key, or a namespaced builtin."""

    obj: Expr
    name: str
    name_span: Span


@dataclass(frozen=True, eq=False)
class Call(Expr):
    func: Expr
    args: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class Param:
    name: str
    span: Span


@dataclass(frozen=True, eq=False)
class FunctionExpr(Expr):
    name: str  # "<anonymous>", or the declared name
    params: tuple[Param, ...]
    body: Block


@dataclass(frozen=True, eq=False)
class TableField:
    key: Expr | None  # None: positional, keys 1, 2, ... in order
    value: Expr


@dataclass(frozen=True, eq=False)
class Table(Expr):
    fields: tuple[TableField, ...]


@dataclass(frozen=True, eq=False)
class Unary(Expr):
    op: str  # "neg" or "not"
    operand: Expr


@dataclass(frozen=True, eq=False)
class Binary(Expr):
    op: str  # add sub mul div mod concat eq ne lt le gt ge and or
    left: Expr
    right: Expr


# --- statements -------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Stat:
    span: Span


@dataclass(frozen=True, eq=False)
class Block:
    stats: tuple[Stat, ...]
    span: Span


@dataclass(frozen=True, eq=False)
class Local(Stat):
    names: tuple[Param, ...]
    values: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class LocalFunction(Stat):
    name: Param
    func: FunctionExpr


@dataclass(frozen=True, eq=False)
class If(Stat):
    tests: tuple[tuple[Expr, Block], ...]  # if and each elseif
    orelse: Block | None


@dataclass(frozen=True, eq=False)
class While(Stat):
    test: Expr
    body: Block


@dataclass(frozen=True, eq=False)
class ForNum(Stat):
    var: Param
    start: Expr
    stop: Expr
    step: Expr | None
    body: Block


@dataclass(frozen=True, eq=False)
class ForIn(Stat):
    key: Param
    value: Param | None
    iterator: Expr  # must be pairs(t)
    body: Block


@dataclass(frozen=True, eq=False)
class Break(Stat):
    pass


@dataclass(frozen=True, eq=False)
class Return(Stat):
    value: Expr | None


@dataclass(frozen=True, eq=False)
class EventSpec:
    text: str
    span: Span


@dataclass(frozen=True, eq=False)
class Trace(Stat):
    events: tuple[EventSpec, ...]
    filter: EventSpec | None  # the text between the slashes
    body: Block


@dataclass(frozen=True, eq=False)
class TraceEnd(Stat):
    body: Block


@dataclass(frozen=True, eq=False)
class Timer(Stat):
    kind: str  # "tick" or "profile"
    interval: EventSpec
    body: Block


@dataclass(frozen=True, eq=False)
class Assign(Stat):
    targets: tuple[Expr, ...]
    values: tuple[Expr, ...]


@dataclass(frozen=True, eq=False)
class AddAssign(Stat):
    target: Expr
    value: Expr


@dataclass(frozen=True, eq=False)
class Aggregate(Stat):
    target: Expr
    value: Expr


@dataclass(frozen=True, eq=False)
class ExprStat(Stat):
    expr: Expr


@dataclass(frozen=True, eq=False)
class Chunk:
    """The module root: the main chunk's statements."""

    body: Block
