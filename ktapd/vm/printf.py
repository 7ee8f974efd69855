"""printf for ktap: C-like conversions over ktap values, implemented by hand.

Conversions ``%c %d %i %o %u %x %X %s %p %%``; flags ``- + space # 0``;
width and precision as decimal digits; C length modifiers (``l``, ``ll``,
``h``, ``z``...) are accepted and ignored, since every ktap number is 64
bits.  ``%u %o %x %X %p`` show negative numbers as unsigned 64-bit, as C
does.  ``%s`` of a non-string prints its print() form.  A wrong argument
type, a missing argument or an unknown conversion is a run-time error.

Python's ``%`` operator is not used for integers because its ``#o`` and
``#x`` differ from C's; doing it here also keeps program text out of any
format machinery.  A ``Formatter`` (one per machine, for its line limit)
keeps each format string it has seen as a plan: the literal pieces and
one conversion between each two, with plain ``%s`` and ``%d``/``%i`` (no
flags, width or precision: nearly every use) handled inline.

Must not import the machine, the probes, or anything outside the VM's
value module and the standard library.
"""

from __future__ import annotations

from ktapd.vm.values import KtapError, as_string, to_text, type_name

_MASK64 = (1 << 64) - 1
_FLAGS = "-+ #0"
_LENGTH_MODIFIERS = "hlLqjzt"
_CONVERSIONS = "cdiouxXsp"

# A parsed format: literal strings and (flags, width, precision, conversion) specs.
Spec = tuple[str, int, int | None, str]
_PLANS_KEPT = 256  # formats remembered per Formatter (a script has few)
# Kinds of conversion in a plan.
_PLAIN_S = 0  # %s: the string, or the print() form
_PLAIN_D = 1  # %d, %i: the decimal number
_GENERAL = 2  # anything with flags, width or precision: _convert


class Formatter:
    """printf formatting for one machine (``max_len``: its output line limit)."""

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        # format string -> (literals, conversions); len(literals) == len(conversions) + 1
        self._plans: dict[str, tuple[tuple[str, ...], tuple[tuple[int, Spec], ...]]] = {}

    def _plan(self, text: str) -> tuple:
        literals = [""]
        conversions = []
        for part in parse(text, self.max_len):
            if part.__class__ is str:
                literals[-1] += part
                continue
            flags, width, precision, conv = part
            if flags or width or precision is not None:
                kind = _GENERAL
            else:
                kind = _PLAIN_S if conv == "s" else _PLAIN_D if conv in "di" else _GENERAL
            conversions.append((kind, part))
            literals.append("")
        plan = (tuple(literals), tuple(conversions))
        if len(self._plans) >= _PLANS_KEPT:
            self._plans.clear()
        self._plans[text] = plan
        return plan

    def format(self, fmt: object, args: tuple) -> str:
        plan = self._plans.get(fmt) if fmt.__class__ is str else None
        if plan is None:
            text = as_string(fmt)
            if text is None:
                raise KtapError(f"bad argument #1 to 'printf' (string expected, got {type_name(fmt)})")
            plan = self._plans.get(text) or self._plan(text)
        literals, conversions = plan
        out = [literals[0]]
        given = len(args)
        position = 0
        for kind, spec in conversions:
            if position >= given:
                raise KtapError(f"bad argument #{position + 2} to 'printf' (no value)")
            value = args[position]
            position += 1
            if kind == _PLAIN_S:
                out.append(value if value.__class__ is str else to_text(value))
            elif kind == _PLAIN_D and value.__class__ is int:
                out.append(str(value))
            else:
                out.append(_convert(value, *spec, position + 1))
            out.append(literals[position])
        result = "".join(out)
        if len(result) > self.max_len:
            raise KtapError(f"printf: result longer than {self.max_len} characters")
        return result


def parse(fmt: str, max_width: int) -> list[str | Spec]:
    parts = []
    literal: list[str] = []
    i, n = 0, len(fmt)
    while i < n:
        ch = fmt[i]
        if ch != "%":
            literal.append(ch)
            i += 1
            continue
        i += 1
        if i < n and fmt[i] == "%":
            literal.append("%")
            i += 1
            continue
        start = i
        while i < n and fmt[i] in _FLAGS:
            i += 1
        flags = fmt[start:i]
        start = i
        while i < n and fmt[i].isdigit() and fmt[i].isascii():
            i += 1
        width = int(fmt[start:i]) if i > start else 0
        precision = None
        if i < n and fmt[i] == ".":
            i += 1
            start = i
            while i < n and fmt[i].isdigit() and fmt[i].isascii():
                i += 1
            precision = int(fmt[start:i]) if i > start else 0
        if width > max_width or (precision or 0) > max_width:
            raise KtapError(f"printf: width or precision larger than {max_width}")
        while i < n and fmt[i] in _LENGTH_MODIFIERS:
            i += 1
        if i >= n:
            raise KtapError("printf: the format ends inside a conversion")
        conv = fmt[i]
        if conv not in _CONVERSIONS:
            raise KtapError(f"printf: invalid conversion '%{conv}' in the format")
        i += 1
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append((flags, width, precision, conv))
    if literal:
        parts.append("".join(literal))
    return parts


def format_values(fmt: object, args: tuple, max_len: int) -> str:
    """printf(fmt, args...) as text, without a machine (tests, one-off use)."""
    return Formatter(max_len).format(fmt, args)


def _number(value: object, conv: str, position: int) -> int:
    if value.__class__ is not int:
        raise KtapError(f"bad argument #{position} to 'printf' (number expected for "
                        f"'%{conv}', got {type_name(value)})")
    return value


def _pad(body: str, flags: str, width: int, zero_ok: bool, sign_prefix: str = "") -> str:
    total = len(sign_prefix) + len(body)
    if width <= total:
        return sign_prefix + body
    fill = width - total
    if "-" in flags:
        return sign_prefix + body + " " * fill
    if "0" in flags and zero_ok:
        return sign_prefix + "0" * fill + body
    return " " * fill + sign_prefix + body


def _convert(value: object, flags: str, width: int, precision: int | None, conv: str,
             position: int) -> str:
    if conv == "s":
        text = as_string(value)
        if text is None:
            text = to_text(value)
        if precision is not None:
            text = text[:precision]
        return _pad(text, flags.replace("0", ""), width, False)
    if conv == "c":
        return _pad(chr(_number(value, conv, position) & 0xFF), flags, width, False)
    number = _number(value, conv, position)
    prefix = ""
    if conv in "di":
        digits = str(abs(number))
        if number < 0:
            prefix = "-"
        elif "+" in flags:
            prefix = "+"
        elif " " in flags:
            prefix = " "
    else:
        unsigned = number & _MASK64
        if conv == "u":
            digits = str(unsigned)
        elif conv == "o":
            digits = format(unsigned, "o")
        elif conv == "p":
            digits, prefix = format(unsigned, "x"), "0x"
        else:
            digits = format(unsigned, conv)  # x or X
            if "#" in flags and unsigned:
                prefix = "0" + conv
    if precision is not None:
        digits = "" if precision == 0 and number == 0 else digits.rjust(precision, "0")
    if conv == "o" and "#" in flags and not digits.startswith("0"):
        digits = "0" + digits
    return _pad(digits, flags, width, precision is None, prefix)
