"""printf for ktap: C-like conversions over ktap values, implemented by hand.

Conversions ``%c %d %i %o %u %x %X %s %p %%``; flags ``- + space # 0``;
width and precision as decimal digits; C length modifiers (``l``, ``ll``,
``h``, ``z``...) are accepted and ignored, since every ktap number is 64
bits.  ``%u %o %x %X %p`` show negative numbers as unsigned 64-bit, as C
does.  ``%s`` of a non-string prints its print() form.  A wrong argument
type, a missing argument or an unknown conversion is a run-time error.

Python's ``%`` operator is not used for integers because its ``#o`` and
``#x`` differ from C's; doing it here also keeps program text out of any
format machinery.  A parsed format is cached per format string.

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
_cache: dict[str, list[str | Spec]] = {}
_CACHE_SIZE = 256


def parse(fmt: str, max_width: int) -> list[str | Spec]:
    parts = _cache.get(fmt)
    if parts is not None:
        return parts
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
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[fmt] = parts
    return parts


def format_values(fmt: object, args: tuple, max_len: int) -> str:
    text = as_string(fmt)
    if text is None:
        raise KtapError(f"bad argument #1 to 'printf' (string expected, got {type_name(fmt)})")
    out = []
    argn = 0
    for part in parse(text, max_len):
        if part.__class__ is str:
            out.append(part)
            continue
        flags, width, precision, conv = part
        if argn >= len(args):
            raise KtapError(f"bad argument #{argn + 2} to 'printf' (no value)")
        value = args[argn]
        argn += 1
        out.append(_convert(value, flags, width, precision, conv, argn + 1))
    result = "".join(out)
    if len(result) > max_len:
        raise KtapError(f"printf: result longer than {max_len} characters")
    return result


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
