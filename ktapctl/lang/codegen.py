"""Code generation: checked ast + Resolution -> protocol Program.

Emits the structured register bytecode of protocol/bytecode/opcodes.py.

Registers.  Plain registers are a stack per function: locals take the next
free register when declared, temporaries sit above them and are released
when the expression that needed them is done (``exp_into`` leaves the free
register where it found it), and a block's locals are released at its
end.  Call arguments are therefore consecutive, as CALL/CALLB/TAILCALL
require.  A *captured* local lives in a boxed register instead, which must
never also be used as a plain one; so boxes get their own numbers
(``BoxRef``) and are placed after the highest plain register when the
function is finished, one per captured declaration.  ``NEWBOX`` runs at
each execution of the declaration, so a closure made in a loop captures
that iteration's variable.  Loop variables come from FORNUM/FORPAIRS in
plain registers and are copied into a fresh box at the start of the body
when captured.

Lowering rules (see also the opcode docs):
  a + b      dest = a; dest = dest + b   (a chain needs no extra registers)
  a && b     dest = a; IF dest; dest = b; END          (Lua value semantics)
  a || b     dest = a; IF dest; ELSE; dest = b; END
  a > b      LT dest, b, a   (and >= with LE)
  while      LOOP; test; IF t; ELSE; BREAK; END; body; END
  elseif     ELSE followed by a nested IF
  return f(x)          TAILCALL (a closure call; builtins are not tail-called)
  t[k] += v / <<< v    ADDTABLE / AGGTABLE;  x += v on a variable: ADD + store
  a, b = b, a          all right sides are evaluated before any store

Integer arithmetic on literals is folded (``1024 * 1024`` is one LOADK),
except division by zero, which stays a run-time error.  Every function
ends with RETURN0.  Format limits from protocol/limits.py become compile
errors naming the function.

This module must not import lark, trio, ktapd or the rest of ktapctl.
"""

from __future__ import annotations

from dataclasses import dataclass

from ktapctl.lang import ast
from ktapctl.lang.diagnostics import Diagnostic, Span
from ktapctl.lang.resolve import FuncInfo, Resolution, Variable
from protocol import limits
from protocol.bytecode import opcodes as op
from protocol.bytecode.builtins import EVENT_VAR_BY_NAME
from protocol.bytecode.program import (
    UPVAL_FROM_BOX,
    UPVAL_FROM_UPVAL,
    Function,
    Program,
    Upvalue,
)

_ARITH = {"add": op.ADD, "sub": op.SUB, "mul": op.MUL, "div": op.DIV, "mod": op.MOD,
          "concat": op.CONCAT, "eq": op.EQ, "ne": op.NE, "lt": op.LT, "le": op.LE}
_SWAPPED = {"gt": op.LT, "ge": op.LE}  # a > b is b < a
_NAME_MAX = 256  # longest function or upvalue name the bytecode format keeps


class LimitExceeded(Exception):
    """A format limit was passed; compiling this program cannot go on."""

    def __init__(self, message: str, span: Span):
        super().__init__(message)
        self.diagnostic = Diagnostic(message, span)


@dataclass(eq=False)
class BoxRef:
    """A boxed register, numbered when its function is finished."""

    owner: FuncState  # the function whose register it is
    number: int  # 0, 1, ... within that function

    def register(self) -> int:
        return self.owner.maxreg + self.number


class FuncState:
    def __init__(self, info: FuncInfo, index: int, parent: FuncState | None, nparams: int):
        self.info = info
        self.index = index
        self.parent = parent
        self.nparams = nparams
        self.code: list[list] = []
        self.lines: list[int] = []
        self.constants: list = []
        self.const_index: dict[tuple, int] = {}
        self.upvalues: list[Upvalue] = []  # index may be a BoxRef until finished
        self.upvalue_index: dict[Variable, int] = {}
        self.boxes: list[BoxRef] = []
        self.freereg = nparams
        self.maxreg = nparams
        self.line = info.line
        self.span = Span.point(max(info.line, 1), 1)
        self.loop_depth = 0
        self.block_depth = 0
        # where each variable lives: an int (plain register) or a BoxRef
        self.home: dict[Variable, int | BoxRef] = {}


class CodeGen:
    def __init__(self, res: Resolution, source_name: str):
        self.res = res
        self.source_name = source_name
        self.functions: list[FuncState] = []
        self.fs: FuncState = None  # type: ignore[assignment]

    # --- program / functions -------------------------------------------
    def program(self, chunk: ast.Chunk) -> Program:
        fs = self.open_function(self.res.main, 1)
        arg = self.res.arg
        if arg.captured:
            box = self.new_box()
            self.emit(op.NEWBOX, box)
            self.emit(op.SETBOX, box, 0)
            fs.home[arg] = box
        else:
            fs.home[arg] = 0
        self.block_stats(chunk.body.stats)
        self.close_function()
        functions = tuple(self.finish(f) for f in self.functions)
        return Program(functions=functions, probes=tuple(self.res.probe_table),
                       source_name=self.source_name)

    def open_function(self, info: FuncInfo, nparams: int) -> FuncState:
        fs = FuncState(info, len(self.functions), self.fs, nparams)
        self.functions.append(fs)
        self.fs = fs
        return fs

    def close_function(self) -> None:
        self.emit(op.RETURN0)
        self.fs = self.fs.parent

    def finish(self, fs: FuncState) -> Function:
        """Number the boxes after the plain registers and build the Function."""
        base = fs.maxreg
        nregs = base + len(fs.boxes)
        if nregs > limits.MAX_REGISTERS:
            raise LimitExceeded(
                f"too many local variables in function {fs.info.name} "
                f"(limit {limits.MAX_REGISTERS})", Span.point(max(fs.info.line, 1), 1))

        def place(x):
            return x.register() if isinstance(x, BoxRef) else x

        code = tuple(tuple(place(x) for x in ins) for ins in fs.code)
        # Names are for people reading disassembly; the format caps them.
        upvalues = tuple(Upvalue(u.kind, place(u.index), u.name[:_NAME_MAX])
                         for u in fs.upvalues)
        return Function(
            name=fs.info.name[:_NAME_MAX],
            nparams=fs.nparams,
            nregs=nregs,
            boxed=tuple(base + b.number for b in fs.boxes),
            upvalues=upvalues,
            constants=tuple(fs.constants),
            code=code,
            lines=tuple(fs.lines),
            line=fs.info.line,
        )

    def child_function(self, info: FuncInfo, params: tuple[ast.Param, ...],
                       body: ast.Block) -> int:
        """Compile a nested function; returns its index for CLOSURE."""
        fs = self.open_function(info, len(params))
        fs.line = body.span.line
        for i, p in enumerate(params):
            var = self.res.decls[p]
            if var.captured:
                box = self.new_box()
                self.emit(op.NEWBOX, box)
                self.emit(op.SETBOX, box, i)
                fs.home[var] = box
            else:
                fs.home[var] = i
        self.block(body)
        self.close_function()
        return fs.index

    # --- emitting --------------------------------------------------------
    def emit(self, opcode: int, *operands) -> None:
        fs = self.fs
        if len(fs.code) >= limits.MAX_CODE:
            raise LimitExceeded(f"function {fs.info.name} is too long "
                                f"(more than {limits.MAX_CODE} instructions)", fs.span)
        fs.code.append([opcode, *operands])
        fs.lines.append(fs.line)

    def open_block(self, opcode: int, *operands, loop: bool = False) -> None:
        fs = self.fs
        fs.block_depth += 1
        if fs.block_depth > limits.MAX_BLOCK_DEPTH:
            raise LimitExceeded(
                f"blocks nested too deeply in function {fs.info.name} "
                f"(limit {limits.MAX_BLOCK_DEPTH}; each 'elseif', '&&' and '||' adds one)",
                fs.span)
        if loop:
            fs.loop_depth += 1
            if fs.loop_depth > limits.MAX_LOOP_DEPTH:
                raise LimitExceeded(f"loops nested too deeply in function {fs.info.name} "
                                    f"(limit {limits.MAX_LOOP_DEPTH})", fs.span)
        self.emit(opcode, *operands)

    def end_block(self, loop: bool = False) -> None:
        self.emit(op.END)
        self.fs.block_depth -= 1
        if loop:
            self.fs.loop_depth -= 1

    def constant(self, value) -> int:
        fs = self.fs
        key = (type(value), value)
        index = fs.const_index.get(key)
        if index is None:
            if isinstance(value, str) and len(value) > limits.MAX_CONSTANT_STRING:
                raise LimitExceeded(f"string constant longer than "
                                    f"{limits.MAX_CONSTANT_STRING} characters", fs.span)
            if len(fs.constants) >= limits.MAX_CONSTANTS:
                raise LimitExceeded(f"too many constants in function {fs.info.name} "
                                    f"(limit {limits.MAX_CONSTANTS})", fs.span)
            index = len(fs.constants)
            fs.constants.append(value)
            fs.const_index[key] = index
        return index

    def alloc(self, what: str = "temporary") -> int:
        fs = self.fs
        reg = fs.freereg
        if reg + len(fs.boxes) >= limits.MAX_REGISTERS:
            if what == "local":
                raise LimitExceeded(f"too many local variables in function {fs.info.name} "
                                    f"(limit {limits.MAX_REGISTERS})", fs.span)
            raise LimitExceeded(f"expression too complex in function {fs.info.name} "
                                f"(more than {limits.MAX_REGISTERS} registers)", fs.span)
        fs.freereg += 1
        fs.maxreg = max(fs.maxreg, fs.freereg)
        return reg

    def new_box(self) -> BoxRef:
        fs = self.fs
        if fs.maxreg + len(fs.boxes) >= limits.MAX_REGISTERS:
            raise LimitExceeded(f"too many local variables in function {fs.info.name} "
                                f"(limit {limits.MAX_REGISTERS})", fs.span)
        box = BoxRef(fs, len(fs.boxes))
        fs.boxes.append(box)
        return box

    def at(self, node) -> None:
        """Instructions emitted next belong to this node's line."""
        self.fs.line = node.span.line
        self.fs.span = node.span

    # --- variables -------------------------------------------------------
    def bind(self, var: Variable, value_reg: int) -> None:
        """Make a just-declared variable live; its value is in value_reg,
        a register allocated for it."""
        if var.captured:
            box = self.new_box()
            self.emit(op.NEWBOX, box)
            self.emit(op.SETBOX, box, value_reg)
            self.fs.home[var] = box
        else:
            self.fs.home[var] = value_reg

    def upvalue(self, fs: FuncState, var: Variable) -> int:
        index = fs.upvalue_index.get(var)
        if index is not None:
            return index
        parent = fs.parent
        if var.func is parent.info:
            desc = Upvalue(UPVAL_FROM_BOX, parent.home[var], var.name)
        else:
            desc = Upvalue(UPVAL_FROM_UPVAL, self.upvalue(parent, var), var.name)
        if len(fs.upvalues) >= limits.MAX_UPVALUES:
            raise LimitExceeded(f"too many upvalues in function {fs.info.name} "
                                f"(limit {limits.MAX_UPVALUES})", self.fs.span)
        index = len(fs.upvalues)
        fs.upvalues.append(desc)
        fs.upvalue_index[var] = index
        return index

    def read_var(self, var: Variable, dest: int) -> None:
        fs = self.fs
        if var.func is fs.info:
            home = fs.home[var]
            if isinstance(home, BoxRef):
                self.emit(op.GETBOX, dest, home)
            elif home != dest:
                self.emit(op.MOVE, dest, home)
        else:
            self.emit(op.GETUPVAL, dest, self.upvalue(fs, var))

    def write_var(self, var: Variable, src: int) -> None:
        fs = self.fs
        if var.func is fs.info:
            home = fs.home[var]
            if isinstance(home, BoxRef):
                self.emit(op.SETBOX, home, src)
            elif home != src:
                self.emit(op.MOVE, home, src)
        else:
            self.emit(op.SETUPVAL, self.upvalue(fs, var), src)

    def plain_home(self, var: Variable) -> int | None:
        """The plain register holding var in this function, if it has one."""
        if var.func is self.fs.info:
            home = self.fs.home[var]
            if not isinstance(home, BoxRef):
                return home
        return None

    # --- statements ------------------------------------------------------
    def block(self, block: ast.Block) -> None:
        saved = self.fs.freereg
        self.block_stats(block.stats)
        self.fs.freereg = saved

    def block_stats(self, stats) -> None:
        fs = self.fs
        for s in stats:
            self.at(s)
            before = fs.freereg
            getattr(self, "s_" + type(s).__name__)(s)
            if not isinstance(s, ast.Local | ast.LocalFunction):
                fs.freereg = before  # release the statement's temporaries

    def s_Local(self, s: ast.Local) -> None:
        fs = self.fs
        base = fs.freereg
        temps = []
        for i in range(len(s.names)):
            reg = self.alloc("local")
            temps.append(reg)
            if i < len(s.values):
                self.exp_into(s.values[i], reg)
            else:
                self.at(s)
                self.emit(op.LOADNIL, reg)
        for extra in s.values[len(s.names):]:  # evaluated for their effects
            saved = fs.freereg
            self.exp_into(extra, self.alloc())
            fs.freereg = saved
        self.at(s)
        variables = [self.res.decls[name] for name in s.names]
        # Captured variables go into boxes; the plain ones then close ranks
        # from `base` up, so boxing leaves no unused registers behind.
        for var, reg in zip(variables, temps, strict=True):
            if var.captured:
                self.bind(var, reg)
        home = base
        for var, reg in zip(variables, temps, strict=True):
            if not var.captured:
                if reg != home:
                    self.emit(op.MOVE, home, reg)
                fs.home[var] = home
                home += 1
        fs.freereg = home

    def s_LocalFunction(self, s: ast.LocalFunction) -> None:
        var = self.res.decls[s.name]
        if var.captured:
            box = self.new_box()
            self.emit(op.NEWBOX, box)
            self.fs.home[var] = box  # visible to its own body (recursion)
            saved = self.fs.freereg
            tmp = self.alloc()
            self.exp_into(s.func, tmp)
            self.emit(op.SETBOX, box, tmp)
            self.fs.freereg = saved
        else:
            reg = self.alloc("local")
            self.exp_into(s.func, reg)
            self.fs.home[var] = reg

    def s_If(self, s: ast.If) -> None:
        self._if_chain(list(s.tests), s.orelse)

    def _if_chain(self, tests, orelse) -> None:
        test, body = tests[0]
        saved = self.fs.freereg
        reg = self.exp_any(test)
        self.fs.freereg = saved
        self.at(test)
        self.open_block(op.IF, reg)
        self.block(body)
        if len(tests) > 1 or orelse is not None:
            self.emit(op.ELSE)
            if len(tests) > 1:
                self._if_chain(tests[1:], orelse)
            else:
                self.block(orelse)
        self.end_block()

    def s_While(self, s: ast.While) -> None:
        self.open_block(op.LOOP, loop=True)
        if not _always_true(s.test):
            saved = self.fs.freereg
            reg = self.exp_any(s.test)
            self.fs.freereg = saved
            self.at(s)
            self.open_block(op.IF, reg)
            self.emit(op.ELSE)
            self.emit(op.BREAK)
            self.end_block()
        self.block(s.body)
        self.at(s)
        self.end_block(loop=True)

    def s_ForNum(self, s: ast.ForNum) -> None:
        saved = self.fs.freereg
        start, stop, step = self.alloc(), self.alloc(), self.alloc()
        self.exp_into(s.start, start)
        self.exp_into(s.stop, stop)
        if s.step is None:
            self.emit(op.LOADK, step, self.constant(1))
        else:
            self.exp_into(s.step, step)
        var_reg = self.alloc("local")
        self.at(s)
        self.open_block(op.FORNUM, var_reg, start, stop, step, loop=True)
        self.bind(self.res.decls[s.var], var_reg)
        self.block(s.body)
        self.at(s)
        self.end_block(loop=True)
        self.fs.freereg = saved

    def s_ForIn(self, s: ast.ForIn) -> None:
        saved = self.fs.freereg
        table = self.exp_any(s.iterator.args[0])
        key, value = self.alloc("local"), self.alloc("local")
        self.at(s)
        self.open_block(op.FORPAIRS, key, value, table, loop=True)
        self.bind(self.res.decls[s.key], key)
        if s.value is not None:
            self.bind(self.res.decls[s.value], value)
        self.block(s.body)
        self.at(s)
        self.end_block(loop=True)
        self.fs.freereg = saved

    def s_Break(self, s: ast.Break) -> None:
        self.emit(op.BREAK)

    def s_Return(self, s: ast.Return) -> None:
        v = s.value
        if v is None:
            self.emit(op.RETURN0)
        elif isinstance(v, ast.Call) and v not in self.res.builtin_calls:
            base, n = self.call_setup(v)
            self.at(v)
            self.emit(op.TAILCALL, base, n)
        else:
            self.emit(op.RETURN, self.exp_any(v))

    def _register(self, s: ast.Stat, body: ast.Block) -> None:
        info = self.res.funcs[s]
        index = self.child_function(info, (), body)
        self.at(s)
        reg = self.alloc()
        self.emit(op.CLOSURE, reg, index)
        self.emit(op.REGISTER, self.res.probes[s], reg)

    def s_Trace(self, s: ast.Trace) -> None:
        self._register(s, s.body)

    def s_TraceEnd(self, s: ast.TraceEnd) -> None:
        self._register(s, s.body)

    def s_Timer(self, s: ast.Timer) -> None:
        self._register(s, s.body)

    def s_Assign(self, s: ast.Assign) -> None:
        if len(s.targets) == 1 and len(s.values) == 1:
            self.assign(s.targets[0], s.values[0])
            return
        # Multiple assignment: table and key operands first, then every
        # right side into fresh registers, then the stores.
        places = [self.place(t) for t in s.targets]
        values = []
        for i, v in enumerate(s.values):
            reg = self.alloc()
            self.exp_into(v, reg)
            if i < len(s.targets):
                values.append(reg)
        for _ in range(len(s.targets) - len(values)):
            reg = self.alloc()
            self.emit(op.LOADNIL, reg)
            values.append(reg)
        self.at(s)
        for place, reg in zip(places, values, strict=True):
            self.store(place, reg)

    def place(self, target: ast.Expr):
        """Evaluate what a store needs before the right sides run."""
        if isinstance(target, ast.Name):
            return ("var", self.res.refs[target])
        # Copies, not a local's own register: an earlier store may change it.
        table = self.alloc()
        self.exp_into(target.obj, table)
        if isinstance(target, ast.Field):
            return ("table", table, self.key(target))
        key = self.alloc()
        self.exp_into(target.key, key)
        return ("table", table, key)

    def key(self, target: ast.Index | ast.Field) -> int:
        if isinstance(target, ast.Field):
            reg = self.alloc()
            self.emit(op.LOADK, reg, self.constant(target.name))
            return reg
        return self.exp_any(target.key)

    def store(self, place, reg: int) -> None:
        if place[0] == "var":
            self.write_var(place[1], reg)
        else:
            self.emit(op.SETTABLE, place[1], place[2], reg)

    def assign(self, target: ast.Expr, value: ast.Expr) -> None:
        if isinstance(target, ast.Name):
            var = self.res.refs[target]
            home = self.plain_home(var)
            if home is not None and not _writes_dest_early(value):
                self.exp_into(value, home)
            else:
                reg = self.exp_any(value)
                self.at(target)
                self.write_var(var, reg)
            return
        table = self.exp_any(target.obj)
        key = self.key(target)
        reg = self.exp_any(value)
        self.at(target)
        self.emit(op.SETTABLE, table, key, reg)

    def s_AddAssign(self, s: ast.AddAssign) -> None:
        target = s.target
        if isinstance(target, ast.Name):
            var = self.res.refs[target]
            home = self.plain_home(var)
            if home is not None:
                self.emit(op.ADD, home, home, self.exp_any(s.value))
            else:
                # The value first, then the variable: the same order as for a
                # plain local and for t[k] += v (ADDTABLE reads the entry last).
                value = self.exp_any(s.value)
                reg = self.alloc()
                self.at(s)
                self.read_var(var, reg)
                self.emit(op.ADD, reg, reg, value)
                self.write_var(var, reg)
            return
        table = self.exp_any(target.obj)
        key = self.key(target)
        value = self.exp_any(s.value)
        self.at(s)
        self.emit(op.ADDTABLE, table, key, value)

    def s_Aggregate(self, s: ast.Aggregate) -> None:
        table = self.exp_any(s.target.obj)
        key = self.key(s.target)
        value = self.exp_any(s.value)
        self.at(s)
        self.emit(op.AGGTABLE, table, key, value)

    def s_ExprStat(self, s: ast.ExprStat) -> None:
        self.exp_into(s.expr, self.alloc())

    # --- expressions -----------------------------------------------------
    def plain_local(self, e: ast.Expr) -> int | None:
        """The register of e when e names a plain local of this function."""
        if isinstance(e, ast.Name):
            return self.plain_home(self.res.refs[e])
        return None

    def exp_any(self, e: ast.Expr) -> int:
        """A register holding e's value: a plain local's own, or a new temporary."""
        home = self.plain_local(e)
        if home is not None:
            return home
        reg = self.alloc()
        self.exp_into(e, reg)
        return reg

    def exp_into(self, e: ast.Expr, dest: int) -> None:
        """Emit code leaving e's value in dest; temporaries are released after.

        dest must not be a register that e itself reads (callers pass fresh
        registers, or a local's own register only for expressions that
        write dest last: see _writes_dest_early)."""
        saved = self.fs.freereg
        if isinstance(e, ast.Binary | ast.Unary):
            value = fold(e)
            if value is not None:
                self.at(e)
                self.emit(op.LOADK, dest, self.constant(value))
                return
        getattr(self, "e_" + type(e).__name__)(e, dest)
        self.fs.freereg = saved

    def e_Nil(self, e, dest):
        self.at(e)
        self.emit(op.LOADNIL, dest)

    def e_Bool(self, e, dest):
        self.at(e)
        self.emit(op.LOADBOOL, dest, 1 if e.value else 0)

    def e_Number(self, e, dest):
        self.at(e)
        self.emit(op.LOADK, dest, self.constant(e.value))

    def e_String(self, e, dest):
        self.at(e)
        self.emit(op.LOADK, dest, self.constant(e.value))

    def e_Name(self, e, dest):
        self.at(e)
        self.read_var(self.res.refs[e], dest)

    def e_EventVar(self, e, dest):
        self.at(e)
        self.emit(op.EVAR, dest, EVENT_VAR_BY_NAME[e.name].id)

    def e_ArgsField(self, e, dest):
        self.at(e)
        self.emit(op.EFIELD, dest, self.constant(e.field))

    def e_Index(self, e, dest):
        table = self.exp_any(e.obj)
        key = self.exp_any(e.key)
        self.at(e)
        self.emit(op.GETTABLE, dest, table, key)

    def e_Field(self, e, dest):
        table = self.exp_any(e.obj)
        key = self.key(e)
        self.at(e)
        self.emit(op.GETTABLE, dest, table, key)

    def e_Call(self, e, dest):
        builtin = self.res.builtin_calls.get(e)
        if builtin is not None:
            base = self.fs.freereg
            for a in e.args:
                self.exp_into(a, self.alloc())
            self.at(e)
            self.emit(op.CALLB, dest, builtin.id, base, len(e.args))
            return
        base, n = self.call_setup(e)
        self.at(e)
        self.emit(op.CALL, dest, base, n)

    def call_setup(self, e: ast.Call) -> tuple[int, int]:
        """Function and arguments into consecutive fresh registers."""
        base = self.alloc()
        self.exp_into(e.func, base)
        for a in e.args:
            self.exp_into(a, self.alloc())
        return base, len(e.args)

    def e_FunctionExpr(self, e, dest):
        index = self.child_function(self.res.funcs[e], e.params, e.body)
        self.at(e)
        self.emit(op.CLOSURE, dest, index)

    def e_Table(self, e, dest):
        self.at(e)
        self.emit(op.NEWTABLE, dest)
        position = 0
        for f in e.fields:
            saved = self.fs.freereg
            if f.key is None:
                position += 1
                key = self.alloc()
                self.emit(op.LOADK, key, self.constant(position))
            else:
                key = self.exp_any(f.key)
            value = self.exp_any(f.value)
            self.at(e)
            self.emit(op.SETTABLE, dest, key, value)
            self.fs.freereg = saved

    def e_Unary(self, e, dest):
        operand = self.exp_any(e.operand)
        self.at(e)
        self.emit(op.NEG if e.op == "neg" else op.NOT, dest, operand)

    def e_Binary(self, e, dest):
        if e.op in ("and", "or"):
            self.exp_into(e.left, dest)
            self.at(e)
            self.open_block(op.IF, dest)
            if e.op == "or":
                self.emit(op.ELSE)
            self.exp_into(e.right, dest)
            self.at(e)
            self.end_block()
            return
        # The left operand is computed in dest itself (dest is fresh: see
        # exp_into), so a long `a + b + c + ...` chain needs no more
        # registers than a short one.
        left = self.plain_local(e.left)
        if left is None:
            self.exp_into(e.left, dest)
            left = dest
        right = self.exp_any(e.right)
        self.at(e)
        if e.op in _SWAPPED:
            self.emit(_SWAPPED[e.op], dest, right, left)
        else:
            self.emit(_ARITH[e.op], dest, left, right)


_FOLDABLE = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: _c_div(x, y),
    "mod": lambda x, y: x - _c_div(x, y) * y,
}


def fold(e: ast.Expr) -> int | None:
    """The value of integer arithmetic on literals (1024 * 1024), wrapped like
    the VM does; None when e is not such an expression, or when running it
    must raise an error (division by zero stays a run-time error)."""
    if isinstance(e, ast.Number):
        return e.value
    if isinstance(e, ast.Unary) and e.op == "neg":
        value = fold(e.operand)
        return None if value is None else _wrap(-value)
    if isinstance(e, ast.Binary) and e.op in _FOLDABLE:
        left = fold(e.left)
        right = fold(e.right) if left is not None else None
        if right is None or (right == 0 and e.op in ("div", "mod")):
            return None
        return _wrap(_FOLDABLE[e.op](left, right))
    return None


def _c_div(x: int, y: int) -> int:
    """C division: truncates toward zero."""
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y >= 0) else -q


def _wrap(n: int) -> int:
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


def _always_true(e: ast.Expr) -> bool:
    return isinstance(e, ast.Number | ast.String) or (isinstance(e, ast.Bool) and e.value)


def _writes_dest_early(e: ast.Expr) -> bool:
    """Expressions that write their destination before reading all operands:
    they must not be compiled straight into a variable they may read."""
    return isinstance(e, ast.Table | ast.Binary)


def generate(chunk: ast.Chunk, res: Resolution, source_name: str) -> Program:
    return CodeGen(res, source_name).program(chunk)
