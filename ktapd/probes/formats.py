"""Tracepoint format files: parse them into plain data, decode raw samples lazily.

A tracefs ``format`` file describes one event's raw record: the common
fields, the event's own fields (type, offset, size, signedness) and the
print format.  ``parse_format`` turns the text into an ``EventLayout``,
plain frozen data that can cross a process boundary (``to_wire`` /
``from_wire``), so the unprivileged worker never reads tracefs.

``Decoder`` is built once per layout in the worker: one precompiled
``struct.Struct`` per field, in a tuple indexed by argument number and a
dict by name.  Nothing is decoded until a field is asked for; the hot path
only keeps a reference to the raw bytes.

This module must not open files or events; it only parses text and bytes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

COMMON_PREFIX = "common_"

# Field kinds, decided from the declared type and size.
KIND_INT = "int"  # integer of 1, 2, 4 or 8 bytes (pointers included)
KIND_CHARS = "chars"  # char NAME[N]: a NUL-padded string
KIND_STRING = "string"  # __data_loc / __rel_loc char[]: a string stored after the fields
KIND_BYTES = "bytes"  # any other array or odd-sized field: shown as hex


class FormatError(ValueError):
    """A format file does not have the expected shape."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # declared C type as written ("const char *", "__data_loc char[]")
    offset: int
    size: int
    signed: bool
    kind: str  # KIND_*


@dataclass(frozen=True)
class EventLayout:
    id: int
    system: str
    name: str
    fields: tuple[Field, ...]  # every field, common ones included, in file order
    print_fmt: str  # the text after "print fmt: "

    @property
    def args(self) -> tuple[Field, ...]:
        """The event's own fields: what arg0..argN and args.NAME see."""
        return tuple(f for f in self.fields if not f.name.startswith(COMMON_PREFIX))

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.args)

    def to_wire(self) -> dict:
        return {
            "id": self.id, "system": self.system, "name": self.name,
            "print_fmt": self.print_fmt,
            "fields": [[f.name, f.type, f.offset, f.size, f.signed, f.kind] for f in self.fields],
        }

    @classmethod
    def from_wire(cls, doc: dict) -> EventLayout:
        fields = tuple(Field(str(n), str(t), int(o), int(s), bool(sg), str(k))
                       for n, t, o, s, sg, k in doc["fields"])
        return cls(int(doc["id"]), str(doc["system"]), str(doc["name"]), fields,
                   str(doc["print_fmt"]))


_FIELD_RE = re.compile(
    r"^\s*field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"(?:\s*signed:(?P<signed>\d+);)?"
)
_ARRAY_RE = re.compile(r"^(?P<type>.*?)\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\[(?P<len>[^\]]*)\]$")
_NAME_RE = re.compile(r"^(?P<type>.*?)\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_CHAR_TYPES = {"char", "unsigned char", "signed char", "const char"}


_DYNAMIC_RE = re.compile(
    r"^(?P<loc>__data_loc|__rel_loc)\s+(?P<type>.*?)\s*\[\s*\]\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")


def _field_from_decl(decl: str, offset: int, size: int, signed: bool) -> Field:
    decl = decl.strip()
    dynamic = _DYNAMIC_RE.match(decl)
    if dynamic:  # "__data_loc char[] name": a u32 (length << 16 | offset) in the record
        kind = KIND_STRING if dynamic["type"] in _CHAR_TYPES else KIND_BYTES
        return Field(dynamic["name"], f"{dynamic['loc']} {dynamic['type']}[]", offset, size,
                     signed, kind)
    array = _ARRAY_RE.match(decl)
    if array:
        kind = KIND_CHARS if array["type"] in _CHAR_TYPES else KIND_BYTES
        return Field(array["name"], f"{array['type']}[{array['len']}]", offset, size, signed,
                     kind)
    plain = _NAME_RE.match(decl)
    if not plain:
        raise FormatError(f"cannot read field declaration {decl!r}")
    kind = KIND_INT if size in (1, 2, 4, 8) else KIND_BYTES
    return Field(plain["name"], plain["type"], offset, size, signed, kind)


def parse_format(text: str, system: str = "") -> EventLayout:
    """Parse one tracefs ``format`` file; ``system`` is the directory it came from."""
    name = event_id = None
    fields: list[Field] = []
    print_fmt = ""
    for line in text.splitlines():
        if line.startswith("name:"):
            name = line[5:].strip()
        elif line.startswith("ID:"):
            event_id = int(line[3:].strip())
        elif line.startswith("print fmt:"):
            print_fmt = line[len("print fmt:"):].strip()
        else:
            match = _FIELD_RE.match(line)
            if match:
                signed = match["signed"] == "1"
                fields.append(_field_from_decl(match["decl"], int(match["offset"]),
                                               int(match["size"]), signed))
    if name is None or event_id is None:
        raise FormatError("format file without name or ID")
    return EventLayout(event_id, system, name, tuple(fields), print_fmt)


# --- decoding ------------------------------------------------------------------------

_INT_CODES = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
              (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}
_U32 = struct.Struct("<I")


def _text(raw: bytes) -> str:
    end = raw.find(b"\0")
    if end >= 0:
        raw = raw[:end]
    return raw.decode("utf-8", "replace")


def _hex(raw: bytes) -> str:
    return bytes(raw).hex()


def _make_getter(field: Field):
    """A function (buf, start) -> value for one field of a record that starts
    at ``buf[start]``, with its Struct bound in."""
    offset, size = field.offset, field.size
    if field.kind == KIND_INT:
        unpack = struct.Struct("<" + _INT_CODES[size, field.signed]).unpack_from

        def get(buf, start, unpack=unpack, offset=offset):
            return unpack(buf, start + offset)[0]
    elif field.kind == KIND_CHARS:
        def get(buf, start, offset=offset, size=size):
            return _text(buf[start + offset:start + offset + size])
    elif field.type.startswith(("__data_loc", "__rel_loc")):
        rel = field.type.startswith("__rel_loc")
        show = _text if field.kind == KIND_STRING else _hex

        def get(buf, start, offset=offset, rel=rel, show=show):
            loc = _U32.unpack_from(buf, start + offset)[0]
            begin, length = start + (loc & 0xFFFF), loc >> 16
            if rel:  # __rel_loc counts from the end of the loc word
                begin += offset + 4
            return show(buf[begin:begin + length])
    else:
        def get(buf, start, offset=offset, size=size):
            return _hex(buf[start + offset:start + offset + size])
    return get


class Decoder:
    """Field access for one event layout; built once, shared by all its events.

    Records are addressed as (buf, start): the drain loop copies a whole
    batch of records out of the ring at once and events point into it."""

    __slots__ = ("layout", "by_index", "by_name", "names")

    def __init__(self, layout: EventLayout):
        self.layout = layout
        args = layout.args
        self.names = tuple(f.name for f in args)
        self.by_index = tuple(_make_getter(f) for f in args)
        self.by_name = {f.name: g for f, g in zip(args, self.by_index, strict=True)}

    def arg(self, buf, start: int, n: int):
        try:
            getter = self.by_index[n]
        except IndexError:
            return None
        try:
            return getter(buf, start)
        except struct.error:  # truncated record: treat the field as missing
            return None

    def field(self, buf, start: int, name: str):
        getter = self.by_name[name]  # KeyError for an unknown name, as the protocol says
        try:
            return getter(buf, start)
        except struct.error:
            return None

    def values(self, buf, start: int = 0) -> list[tuple[str, object]]:
        return [(name, self.field(buf, start, name)) for name in self.names]
