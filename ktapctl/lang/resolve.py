"""Semantic checks and name resolution: ast.Chunk -> Resolution or Diagnostics.

One walk over the tree, in source order, with a stack of lexical scopes.
It decides, for codegen:

* which ``Variable`` each name reference and each declaration means, and
  whether the variable is *captured* (used by a nested function or
  handler), so codegen puts it in a boxed register from its declaration on;
* which calls are builtin calls (``print``, ``table.new``) and which call a
  closure: a declared variable always wins over a builtin of the same name;
* the probe table entries for trace/tick/profile/trace_end statements.

It reports every error it finds, not only the first: unknown names,
assignments to undeclared names, builtin arity, kernel-only builtins,
``pairs()`` outside ``for ... in``, '<<<' on something other than ``t[k]``,
``break`` outside a loop, probes outside the main chunk, malformed event
specs, and the format limits that are visible in the tree (parameters, call
arguments, probes, events per probe, functions).

This module must not import lark, trio, ktapd or the rest of ktapctl.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ktapctl.lang import ast, events
from ktapctl.lang.diagnostics import Diagnostic, Span
from protocol import limits
from protocol.bytecode.builtins import (
    BUILTIN_BY_NAME,
    KERNEL_ONLY,
    NAMESPACES,
    VARIADIC,
    Builtin,
)
from protocol.bytecode.program import (
    PROBE_END,
    PROBE_PROFILE,
    PROBE_TICK,
    PROBE_TRACE,
    Probe,
)

PAIRS = "pairs"  # not a builtin id: `for (k, v in pairs(t))` becomes FORPAIRS


@dataclass(eq=False)
class FuncInfo:
    """One function being compiled: the main chunk, a function, or a handler."""

    name: str
    kind: str  # "main", "function", "handler"
    parent: FuncInfo | None
    line: int


@dataclass(eq=False)
class Variable:
    name: str
    func: FuncInfo
    span: Span
    captured: bool = False


@dataclass
class Resolution:
    """What codegen needs to know that the tree does not say."""

    main: FuncInfo
    arg: Variable  # the main chunk's parameter 0
    refs: dict[ast.Name, Variable] = field(default_factory=dict)
    decls: dict[ast.Param, Variable] = field(default_factory=dict)
    funcs: dict[object, FuncInfo] = field(default_factory=dict)  # FunctionExpr/Trace/... -> info
    builtin_calls: dict[ast.Call, Builtin] = field(default_factory=dict)
    probes: dict[ast.Stat, int] = field(default_factory=dict)  # statement -> probe index
    probe_table: list[Probe] = field(default_factory=list)


class Resolver:
    def __init__(self):
        self.diagnostics: list[Diagnostic] = []
        main = FuncInfo("main", "main", None, 0)
        arg = Variable("arg", main, Span.point(1, 1))
        self.res = Resolution(main=main, arg=arg)
        self.scopes: list[dict[str, Variable]] = [{"arg": arg}]
        self.func = main
        self.loop_depth = 0  # loops open in the current function
        self.nfuncs = 1

    def error(self, message: str, span: Span) -> None:
        self.diagnostics.append(Diagnostic(message, span))

    # --- scopes ----------------------------------------------------------
    def declare(self, param: ast.Param) -> Variable:
        var = Variable(param.name, self.func, param.span)
        self.scopes[-1][param.name] = var
        self.res.decls[param] = var
        return var

    def lookup(self, name: str) -> Variable | None:
        for scope in reversed(self.scopes):
            var = scope.get(name)
            if var is not None:
                if var.func is not self.func:
                    var.captured = True
                return var
        return None

    def block(self, block: ast.Block) -> None:
        self.scopes.append({})
        for stat in block.stats:
            self.stat(stat)
        self.scopes.pop()

    def function_body(self, owner: object, info: FuncInfo, params: tuple[ast.Param, ...],
                      body: ast.Block) -> None:
        self.nfuncs += 1
        if self.nfuncs == limits.MAX_FUNCTIONS + 1:
            self.error(f"too many functions in the script (limit {limits.MAX_FUNCTIONS})",
                       Span.point(info.line, 1))
        self.res.funcs[owner] = info
        saved = self.func, self.loop_depth, self.scopes
        self.func, self.loop_depth = info, 0
        self.scopes = self.scopes + [{}]
        if len(params) > limits.MAX_PARAMS:
            self.error(f"too many parameters in function {info.name} "
                       f"(limit {limits.MAX_PARAMS})", params[limits.MAX_PARAMS].span)
        for p in params:
            self.declare(p)
        self.block(body)
        self.func, self.loop_depth, self.scopes = saved

    # --- statements ------------------------------------------------------
    def run(self, chunk: ast.Chunk) -> Resolution:
        for stat in chunk.body.stats:
            self.stat(stat)
        return self.res

    def stat(self, s: ast.Stat) -> None:
        getattr(self, "s_" + type(s).__name__)(s)

    def s_Local(self, s: ast.Local) -> None:
        for v in s.values:
            self.expr(v)
        for name in s.names:
            self.declare(name)

    def s_LocalFunction(self, s: ast.LocalFunction) -> None:
        self.declare(s.name)
        self.expr(s.func)

    def s_If(self, s: ast.If) -> None:
        for test, body in s.tests:
            self.expr(test)
            self.block(body)
        if s.orelse is not None:
            self.block(s.orelse)

    def _loop_body(self, body: ast.Block, params: tuple[ast.Param, ...]) -> None:
        self.loop_depth += 1
        self.scopes.append({})
        for p in params:
            self.declare(p)
        self.block(body)
        self.scopes.pop()
        self.loop_depth -= 1

    def s_While(self, s: ast.While) -> None:
        self.expr(s.test)
        self._loop_body(s.body, ())

    def s_ForNum(self, s: ast.ForNum) -> None:
        for e in (s.start, s.stop, s.step):
            if e is not None:
                self.expr(e)
        self._loop_body(s.body, (s.var,))

    def s_ForIn(self, s: ast.ForIn) -> None:
        it = s.iterator
        if (
            isinstance(it, ast.Call)
            and isinstance(it.func, ast.Name)
            and it.func.name == PAIRS
            and self.lookup(PAIRS) is None
        ):
            if len(it.args) != 1:
                self.error(f"wrong number of arguments to 'pairs': expected 1, got {len(it.args)}",
                           it.span)
            for a in it.args:
                self.expr(a)
        else:
            self.error("'for ... in' needs pairs(t): it is the only iterator", it.span)
        params = (s.key,) if s.value is None else (s.key, s.value)
        self._loop_body(s.body, params)

    def s_Break(self, s: ast.Break) -> None:
        if self.loop_depth == 0:
            self.error("'break' outside a loop", s.span)

    def s_Return(self, s: ast.Return) -> None:
        if s.value is not None:
            self.expr(s.value)

    def _probe(self, s: ast.Stat, word: str, name: str, probe: Probe, body: ast.Block) -> None:
        if self.func is not self.res.main:
            self.error(f"'{word}' is only allowed in the main chunk, "
                       "not inside a function or another handler", s.span)
        if len(self.res.probe_table) == limits.MAX_PROBES:
            self.error(f"too many probes in the script (limit {limits.MAX_PROBES})", s.span)
        self.res.probes[s] = len(self.res.probe_table)
        self.res.probe_table.append(probe)
        name = f"<{name}>"[:250]
        self.function_body(s, FuncInfo(name, "handler", self.func, s.span.line), (), body)

    def s_Trace(self, s: ast.Trace) -> None:
        if len(s.events) > limits.MAX_EVENTS_PER_PROBE:
            self.error(f"too many events in one 'trace' (limit {limits.MAX_EVENTS_PER_PROBE})",
                       s.events[limits.MAX_EVENTS_PER_PROBE].span)
        for ev in s.events:
            msg = events.check_event_spec(ev.text)
            if msg:
                self.error(msg, ev.span)
        filt = None
        if s.filter is not None:
            filt = s.filter.text
            msg = events.check_filter(filt)
            if msg:
                self.error(msg, s.filter.span)
        probe = Probe(PROBE_TRACE, tuple(e.text for e in s.events), filt, 0, s.span.line)
        self._probe(s, "trace", "trace " + ", ".join(e.text for e in s.events), probe, s.body)

    def s_TraceEnd(self, s: ast.TraceEnd) -> None:
        self._probe(s, "trace_end", "trace_end", Probe(PROBE_END, line=s.span.line), s.body)

    def s_Timer(self, s: ast.Timer) -> None:
        period, msg = events.parse_interval(s.interval.text)
        if msg:
            self.error(msg, s.interval.span)
        kind = PROBE_TICK if s.kind == "tick" else PROBE_PROFILE
        probe = Probe(kind, period_ns=period, line=s.span.line)
        self._probe(s, s.kind, f"{s.kind}-{s.interval.text}", probe, s.body)

    def s_Assign(self, s: ast.Assign) -> None:
        for v in s.values:
            self.expr(v)
        for t in s.targets:
            self.target(t)

    def s_AddAssign(self, s: ast.AddAssign) -> None:
        self.expr(s.value)
        self.target(s.target)

    def s_Aggregate(self, s: ast.Aggregate) -> None:
        self.expr(s.value)
        if isinstance(s.target, ast.Index | ast.Field):
            self.target(s.target)
        else:
            self.error("the left side of '<<<' must be a table element such as t[k]",
                       s.target.span)

    def s_ExprStat(self, s: ast.ExprStat) -> None:
        self.expr(s.expr)

    def target(self, t: ast.Expr) -> None:
        if isinstance(t, ast.Name):
            var = self.lookup(t.name)
            if var is None:
                self.error(f"assignment to undeclared variable '{t.name}' "
                           f"(declare it first: var {t.name})", t.span)
            else:
                self.res.refs[t] = var
        elif isinstance(t, ast.Index):
            self.expr(t.obj)
            self.expr(t.key)
        elif isinstance(t, ast.Field):
            self.expr(t.obj)
        else:
            self.error("cannot assign to this expression", t.span)

    # --- expressions -----------------------------------------------------
    def expr(self, e: ast.Expr) -> None:
        method = getattr(self, "e_" + type(e).__name__, None)
        if method is not None:
            method(e)

    def e_Name(self, e: ast.Name) -> None:
        var = self.lookup(e.name)
        if var is not None:
            self.res.refs[e] = var
        elif e.name in KERNEL_ONLY:
            self.error(f"'{e.name}' is not available: {KERNEL_ONLY[e.name]}", e.span)
        elif e.name in BUILTIN_BY_NAME or e.name == PAIRS:
            self.error(f"builtin function '{e.name}' can only be called", e.span)
        elif e.name in NAMESPACES:
            self.error(f"'{e.name}' is a library of builtin functions, not a value", e.span)
        else:
            self.error(f"unknown name '{e.name}'", e.span)

    def e_Field(self, e: ast.Field) -> None:
        builtin = self._namespaced(e)
        if builtin is not None:
            self.error(f"builtin function '{builtin}' can only be called", e.span)
        elif builtin is None and not self._namespace_error(e):
            self.expr(e.obj)

    def _namespaced(self, e: ast.Field) -> str | None:
        """The builtin a.b names, when a is a library name and not a variable."""
        if (isinstance(e.obj, ast.Name) and e.obj.name in NAMESPACES
                and self.lookup(e.obj.name) is None):
            name = f"{e.obj.name}.{e.name}"
            if name in BUILTIN_BY_NAME:
                return name
        return None

    def _namespace_error(self, e: ast.Field) -> bool:
        """Report ns.unknown or a kernel-only library; True if reported."""
        if not isinstance(e.obj, ast.Name) or self.lookup(e.obj.name) is not None:
            return False
        if e.obj.name in KERNEL_ONLY:
            self.error(f"'{e.obj.name}.{e.name}' is not available: {KERNEL_ONLY[e.obj.name]}",
                       e.span)
            return True
        if e.obj.name in NAMESPACES:
            self.error(f"unknown function '{e.obj.name}.{e.name}'", e.span)
            return True
        return False

    def e_Call(self, e: ast.Call) -> None:
        if len(e.args) > limits.MAX_CALL_ARGS:
            self.error(f"too many arguments in a call (limit {limits.MAX_CALL_ARGS})",
                       e.args[limits.MAX_CALL_ARGS].span)
        f = e.func
        name = None
        if isinstance(f, ast.Name) and self.lookup(f.name) is None:
            name = f.name
            if name == PAIRS:
                self.error("pairs() can only be used in 'for (k, v in pairs(t))'", e.span)
                name = ""
            elif name not in BUILTIN_BY_NAME:
                self.expr(f)  # reports unknown / kernel-only names
                name = ""
        elif isinstance(f, ast.Field):
            name = self._namespaced(f)
            if name is None and self._namespace_error(f):
                name = ""
        if name:
            builtin = BUILTIN_BY_NAME[name]
            self.res.builtin_calls[e] = builtin
            n = len(e.args)
            if n < builtin.min_args or (builtin.max_args != VARIADIC and n > builtin.max_args):
                self.error(f"wrong number of arguments to '{name}': expected "
                           f"{_arity(builtin)}, got {n}", e.span)
        elif name is None:
            self.expr(f)
        for a in e.args:
            self.expr(a)

    def e_Index(self, e: ast.Index) -> None:
        self.expr(e.obj)
        self.expr(e.key)

    def e_Table(self, e: ast.Table) -> None:
        for f in e.fields:
            if f.key is not None:
                self.expr(f.key)
            self.expr(f.value)

    def e_FunctionExpr(self, e: ast.FunctionExpr) -> None:
        info = FuncInfo(e.name, "function", self.func, e.span.line)
        self.function_body(e, info, e.params, e.body)

    def e_Unary(self, e: ast.Unary) -> None:
        self.expr(e.operand)

    def e_Binary(self, e: ast.Binary) -> None:
        self.expr(e.left)
        self.expr(e.right)


def _arity(b: Builtin) -> str:
    if b.max_args == VARIADIC:
        return f"at least {b.min_args}"
    if b.min_args == b.max_args:
        return str(b.min_args)
    if b.max_args == b.min_args + 1:
        return f"{b.min_args} or {b.max_args}"
    return f"{b.min_args} to {b.max_args}"


def resolve(chunk: ast.Chunk) -> tuple[Resolution, list[Diagnostic]]:
    r = Resolver()
    res = r.run(chunk)
    return res, r.diagnostics
