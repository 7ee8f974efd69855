"""``argstr``: an event rendered the way ftrace's trace_pipe shows it.

Syscall events are printed by the kernel's syscall tracer, not by their
print fmt: ``sys_close(fd: 3)`` on entry (values below 10 in decimal,
others as 0x hex, as kernel 6.x prints them) and ``sys_close -> 0x0`` on
exit.  Other events follow their ``print fmt`` line: its printf format is
applied to the arguments when each is a plain field reference
(``REC->x``, ``__get_str(x)``, casts, ``REC->x ? "a" : "b"``).  Events
whose print fmt uses kernel helpers we cannot evaluate get a table entry
(sched_switch's ``__print_flags``) or, failing that, ``name=value`` pairs.

``renderer(layout)`` does the parsing once per event type and returns a
function ``(decoder, buf, start) -> str``.

This module must not read files or kernel state; it works on a layout and
a raw record only.
"""

from __future__ import annotations

import re

from ktapd.probes.formats import KIND_INT, EventLayout

_SYS_ENTER = "sys_enter_"
_SYS_EXIT = "sys_exit_"


def _hex_or_small(value: int) -> str:
    value &= 0xFFFFFFFFFFFFFFFF
    return str(value) if value < 10 else f"0x{value:x}"


def _syscall_enter(layout: EventLayout):
    name = "sys_" + layout.name[len(_SYS_ENTER):]
    names = [n for n in layout.arg_names if n != "__syscall_nr"]

    def render(decoder, buf, start):
        parts = [f"{n}: {_hex_or_small(decoder.field(buf, start, n))}" for n in names]
        return f"{name}({', '.join(parts)})"
    return render


def _syscall_exit(layout: EventLayout):
    name = "sys_" + layout.name[len(_SYS_EXIT):]

    def render(decoder, buf, start):
        return f"{name} -> 0x{decoder.field(buf, start, 'ret') & 0xFFFFFFFFFFFFFFFF:x}"
    return render


# --- sched_switch: prev_state through __print_flags ---------------------------------
_TASK_STATES = ((0x01, "S"), (0x02, "D"), (0x04, "T"), (0x08, "t"), (0x10, "X"), (0x20, "Z"),
                (0x40, "P"), (0x80, "I"))
_TASK_STATE_MASK = 0xFF
_TASK_PREEMPTED = 0x100


def _sched_switch(layout: EventLayout):
    def render(decoder, buf, start):
        f = decoder.field
        state = f(buf, start, "prev_state")
        bits = state & _TASK_STATE_MASK
        letters = "|".join(s for b, s in _TASK_STATES if bits & b) if bits else "R"
        if state & _TASK_PREEMPTED:
            letters += "+"
        return (f"prev_comm={f(buf, start, 'prev_comm')} prev_pid={f(buf, start, 'prev_pid')} "
                f"prev_prio={f(buf, start, 'prev_prio')} prev_state={letters} ==> "
                f"next_comm={f(buf, start, 'next_comm')} next_pid={f(buf, start, 'next_pid')} "
                f"next_prio={f(buf, start, 'next_prio')}")
    return render


# Events whose print fmt needs kernel helpers: hand-written renderers.
SPECIAL = {"sched:sched_switch": _sched_switch}


# --- generic print fmt ---------------------------------------------------------------

_CONV = re.compile(r"%(?P<flags>[-+ #0]*)(?P<width>\d*)(?:\.(?P<prec>\d+))?"
                   r"(?P<len>hh|h|ll|l|L|z|j|t)?(?P<conv>[diouxXscp%])(?P<pext>[sSfFbB])?")
_CAST = re.compile(r"^\(\s*(?:const\s+|unsigned\s+|signed\s+|struct\s+)*[A-Za-z_][A-Za-z0-9_]*"
                   r"(?:\s+(?:long|int|char|short))*\s*\**\s*\)\s*")
_FIELD_REF = re.compile(r"^REC->([A-Za-z_][A-Za-z0-9_]*)$")
_GET_STR = re.compile(r"^__get_str\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$")
_TERNARY = re.compile(r'^(?P<cond>.+?)\s*\?\s*"(?P<a>[^"]*)"\s*:\s*"(?P<b>[^"]*)"$')


def _split_args(text: str) -> tuple[str, list[str]] | None:
    """Split ``"fmt", a, b(c, d)`` into the format string and top-level args."""
    text = text.strip()
    if not text.startswith('"'):
        return None
    end = 1
    while end < len(text) and not (text[end] == '"' and text[end - 1] != "\\"):
        end += 1
    fmt = text[1:end].encode().decode("unicode_escape", "replace")
    args, depth, in_str, buf = [], 0, False, ""
    for ch in text[end + 1:]:
        if ch == '"':
            in_str = not in_str
        if not in_str:
            if ch in "({[":
                depth += 1
            elif ch in ")}]":
                depth -= 1
            elif ch == "," and depth == 0:
                args.append(buf.strip())
                buf = ""
                continue
        buf += ch
    args.append(buf.strip())
    return fmt, [a for a in args if a]


def _strip(expr: str) -> str:
    """Remove redundant outer parentheses and leading casts."""
    expr = expr.strip()
    while True:
        if expr.startswith("(") and _matching_paren(expr) == len(expr) - 1:
            expr = expr[1:-1].strip()
            continue
        cast = _CAST.match(expr)
        if cast and cast.end() < len(expr):
            expr = expr[cast.end():].strip()
            continue
        return expr


def _matching_paren(expr: str) -> int:
    depth = 0
    for i, ch in enumerate(expr):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _compile_arg(expr: str, names: set[str]):
    """A function (decoder, buf, start) -> value for one print fmt argument, or None."""
    expr = _strip(expr)
    m = _FIELD_REF.match(expr) or _GET_STR.match(expr)
    if m and m.group(1) in names:
        name = m.group(1)
        return lambda decoder, buf, start: decoder.field(buf, start, name)
    t = _TERNARY.match(expr)
    if t:
        cond = _compile_arg(t["cond"], names)
        if cond is not None:
            a, b = t["a"], t["b"]
            return lambda decoder, buf, start: a if cond(decoder, buf, start) else b
    return None


def _format_one(spec: re.Match, value) -> str:
    conv = spec["conv"]
    if isinstance(value, str) or conv == "s":
        text = str(value)
        width = int(spec["width"] or 0)
        return text.ljust(width) if "-" in spec["flags"] else text.rjust(width)
    if value is None:
        value = 0
    if conv in "xXop" or conv == "u":
        bits = 32 if spec["len"] in (None, "h", "hh") and conv != "p" else 64
        value &= (1 << bits) - 1
    if conv == "p":
        return f"{value:x}" if not spec["pext"] else f"0x{value:x}"
    if conv == "c":
        return chr(value & 0xFF)
    py = {"d": "d", "i": "d", "u": "d", "x": "x", "X": "X", "o": "o"}[conv]
    flags = spec["flags"]
    fmt = "%" + flags + (spec["width"] or "") + py
    return fmt % value


def _generic(layout: EventLayout):
    parsed = _split_args(layout.print_fmt)
    if parsed is None:
        return None
    fmt, exprs = parsed
    names = set(layout.arg_names)
    getters = [_compile_arg(e, names) for e in exprs]
    specs = [m for m in _CONV.finditer(fmt) if m["conv"] != "%"]
    if any(g is None for g in getters) or len(specs) != len(getters):
        return None
    pieces: list[str] = []
    last = 0
    for m in _CONV.finditer(fmt):
        pieces.append(fmt[last:m.start()])
        pieces.append(None if m["conv"] != "%" else "%")
        last = m.end()
    tail = fmt[last:]

    def render(decoder, buf, start):
        out = []
        values = iter(zip(specs, getters, strict=True))
        for piece in pieces:
            if piece is None:
                spec, getter = next(values)
                out.append(_format_one(spec, getter(decoder, buf, start)))
            else:
                out.append(piece)
        out.append(tail)
        return "".join(out)
    return render


def _fallback(layout: EventLayout):
    kinds = {f.name: f.kind for f in layout.args}

    def render(decoder, buf, start):
        parts = []
        for name in decoder.names:
            value = decoder.field(buf, start, name)
            if kinds[name] == KIND_INT and isinstance(value, int) and value >= 10:
                value = f"0x{value & 0xFFFFFFFFFFFFFFFF:x}"
            parts.append(f"{name}={value}")
        return " ".join(parts)
    return render


def renderer(layout: EventLayout):
    """The argstr function for one event type: (decoder, buf, start) -> str."""
    key = f"{layout.system}:{layout.name}"
    if key in SPECIAL:
        return SPECIAL[key](layout)
    if layout.system == "syscalls" and layout.name.startswith(_SYS_ENTER):
        return _syscall_enter(layout)
    if layout.system == "syscalls" and layout.name.startswith(_SYS_EXIT):
        return _syscall_exit(layout)
    return _generic(layout) or _fallback(layout)
