"""Run-time values of the ktap language and the operations on them.

Representation (chosen so generated code can test kinds with one
``x.__class__ is C`` comparison):

============  =====================================================
ktap value    Python value
============  =====================================================
nil           None
boolean       True / False (never mixed up with numbers: see below)
number        int, always within int64 (arithmetic wraps)
string        str; one character per byte/code point (\\xHH escapes
              are code points 0..255).  The string limit counts
              characters.
table         Table (a dict plus an entry limit)
function      a Python function made by the translated code
aggregate     Aggregate (``t[k] <<< v``)
stack         Stack (frames, compared and hashed by content)
event string  EventString (``argstr``)
kernel addr   KernelAddress (``ipof``)
============  =====================================================

Python says ``True == 1`` and ``hash(True) == hash(1)``; ktap says a
boolean is never a number.  Equality therefore also compares classes, and
table keys go through ``table_key``, which stores booleans as two
sentinel objects (and event strings as their text, as ktap did).

Every error a script can cause is a ``KtapError``; the machine turns it
into an Error record.  This module must not import the rest of the VM,
the probes or anything outside the standard library and protocol.
"""

from __future__ import annotations

from protocol.limits import INT64_MAX, INT64_MIN

_MASK64 = (1 << 64) - 1


class KtapError(Exception):
    """A run-time error of the script: stops the handler, becomes an Error record."""


class Table:
    """A ktap table: a dict of normalised keys with a per-table entry limit."""

    __slots__ = ("d", "limit")

    def __init__(self, limit: int):
        self.d: dict = {}
        self.limit = limit


class Aggregate:
    """Statistics of ``t[k] <<< v``: count, sum, min, max, power-of-two buckets."""

    __slots__ = ("count", "sum", "min", "max", "buckets")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0
        self.min = 0
        self.max = 0
        self.buckets: dict[int, int] = {}

    def add(self, value: object) -> None:
        if value.__class__ is not int:
            raise KtapError(f"<<< needs a number, got {type_name(value)}")
        if self.count == 0:
            self.min = self.max = value
        elif value < self.min:
            self.min = value
        elif value > self.max:
            self.max = value
        self.count += 1
        total = self.sum + value
        self.sum = total if INT64_MIN <= total <= INT64_MAX else wrap(total)
        bucket = quantize_bucket(value)
        self.buckets[bucket] = self.buckets.get(bucket, 0) + 1

    @property
    def avg(self) -> int:
        return c_div(self.sum, self.count) if self.count else 0

    def text(self) -> str:
        return (f"[count: {self.count} sum: {self.sum} max: {self.max} min: {self.min} "
                f"avg: {self.avg}]")


class Stack:
    """A call stack: frames innermost first.  Usable as a table key."""

    __slots__ = ("frames",)

    def __init__(self, frames: tuple[str, ...]):
        self.frames = frames

    def __eq__(self, other: object) -> bool:
        return other.__class__ is Stack and other.frames == self.frames

    def __hash__(self) -> int:
        return hash(self.frames)

    def text(self) -> str:
        """As a string (stringof, print_hist keys): one frame per line."""
        return "\n".join(self.frames)

    def printed(self) -> str:
        """As print() shows it (ftrace's stack-trace layout)."""
        return "<stack trace>" + "".join(f"\n => {frame}" for frame in self.frames)


class EventString:
    """``argstr``: the rendered event.  Prints and keys as its text."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


class KernelAddress:
    """``ipof(addr)``: a number tagged as a kernel address, with its symbol
    when the machine was given a symboliser."""

    __slots__ = ("addr", "name")

    def __init__(self, addr: int, name: str | None = None):
        self.addr = addr
        self.name = name

    def __eq__(self, other: object) -> bool:
        return other.__class__ is KernelAddress and other.addr == self.addr

    def __hash__(self) -> int:
        return hash(("ip", self.addr))

    def text(self) -> str:
        return self.name if self.name else f"0x{self.addr & _MASK64:x}"


class _BoolKey:
    """Stands in for a boolean inside a table's dict, so true and 1 are different keys."""

    __slots__ = ("value",)

    def __init__(self, value: bool):
        self.value = value


TRUE_KEY = _BoolKey(True)
FALSE_KEY = _BoolKey(False)


def table_key(key: object) -> object:
    """The dict key for a ktap key (generated code calls this only for keys
    that are not str or int)."""
    cls = key.__class__
    if cls is str or cls is int:
        return key
    if key is None:
        raise KtapError("table index is nil")
    if cls is bool:
        return TRUE_KEY if key else FALSE_KEY
    if cls is EventString:
        return key.text
    return key


def key_value(key: object) -> object:
    """The ktap value of a dict key (inverse of table_key)."""
    return key.value if key.__class__ is _BoolKey else key


def table_full(table: Table, name: str | None) -> None:
    what = f"table {name}" if name else f"table 0x{id(table):x}"
    raise KtapError(f"table overflow ({what} has reached its limit of {table.limit} entries)")


def pairs_snapshot(table: object) -> list:
    if table.__class__ is not Table:
        raise KtapError(f"pairs needs a table, got {type_name(table)}")
    return [(key.value if key.__class__ is _BoolKey else key, value)
            for key, value in table.d.items()]


def type_name(value: object) -> str:
    cls = value.__class__
    if value is None:
        return "nil"
    if cls is bool:
        return "boolean"
    if cls is int:
        return "number"
    if cls is str or cls is EventString:
        return "string"
    if cls is Table:
        return "table"
    if cls is Aggregate:
        return "aggregate"
    if cls is Stack:
        return "stack"
    if cls is KernelAddress:
        return "kernel address"
    return "function"


def to_text(value: object) -> str:
    """The print() form of a value."""
    cls = value.__class__
    if cls is str:
        return value
    if cls is int:
        return str(value)
    if value is None:
        return "nil"
    if cls is bool:
        return "true" if value else "false"
    if cls is Table:
        return f"table 0x{id(value):x}"
    if cls is Aggregate:
        return value.text()
    if cls is Stack:
        return value.printed()
    if cls is EventString:
        return value.text
    if cls is KernelAddress:
        return value.text()
    return f"function 0x{id(value):x}"


# --- numbers -------------------------------------------------------------


def wrap(value: int) -> int:
    """Reduce an integer to int64 the way x86-64 arithmetic does."""
    return ((value - INT64_MIN) & _MASK64) + INT64_MIN


def c_div(a: int, b: int) -> int:
    """C division: truncate toward zero (b != 0)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def arith_error(a: object, b: object = 0) -> None:
    bad = a if a.__class__ is not int else b
    raise KtapError(f"attempt to do arithmetic on a {type_name(bad)} value")


def compare_error(a: object, b: object) -> None:
    bad = a if a.__class__ is not int else b
    raise KtapError(f"attempt to compare a {type_name(bad)} value (only numbers are ordered)")


def divide(a: object, b: object) -> int:
    if a.__class__ is not int or b.__class__ is not int:
        arith_error(a, b)
    if b == 0:
        raise KtapError("divide 0")
    q = c_div(a, b)
    return q if q <= INT64_MAX else wrap(q)  # INT64_MIN / -1


def modulo(a: object, b: object) -> int:
    if a.__class__ is not int or b.__class__ is not int:
        arith_error(a, b)
    if b == 0:
        raise KtapError("divide 0")
    return a - b * c_div(a, b)


def as_string(value: object) -> str | None:
    cls = value.__class__
    if cls is str:
        return value
    if cls is EventString:
        return value.text
    return None


def concat(a: object, b: object, limit: int) -> str:
    """``a .. b`` for the cases the inline template does not handle."""
    left, right = as_string(a), as_string(b)
    if left is None or right is None:
        bad = a if left is None else b
        raise KtapError(f"attempt to concatenate a {type_name(bad)} value (strings only)")
    result = left + right
    if len(result) > limit:
        string_too_long(limit)
    return result


def string_too_long(limit: int) -> None:
    raise KtapError(f"string is longer than the limit of {limit} characters")


def quantize_bucket(value: int) -> int:
    """DTrace quantize: 0, or the power of two at or below |value|, with the sign."""
    if value > 0:
        return 1 << (value.bit_length() - 1)
    if value < 0:
        return -(1 << ((-value).bit_length() - 1))
    return 0


def _bucket_below(b: int) -> int:
    if b > 1:
        return b >> 1
    if b == 1:
        return 0
    if b == 0:
        return -1
    return b * 2


def _bucket_above(b: int) -> int:
    if b >= 1:
        return b * 2
    if b == 0:
        return 1
    if b == -1:
        return 0
    return b // 2


def quantize_rows(buckets: dict[int, int]) -> tuple[tuple[int, int], ...]:
    """Every bucket from one below the lowest used to one above the highest
    (DTrace's zero rows fencing the range), ascending.  Fences that would
    leave int64 are left out."""
    if not buckets:
        return ()
    low, high = min(buckets), max(buckets)
    rows = []
    below = _bucket_below(low)
    if below >= INT64_MIN:
        rows.append((below, 0))
    b = low
    while True:
        rows.append((b, buckets.get(b, 0)))
        if b == high:
            break
        b = _bucket_above(b)
    above = _bucket_above(high)
    if above <= INT64_MAX:
        rows.append((above, 0))
    return tuple(rows)
