"""Output records: what a session sends back instead of text (DESIGN decision 8).

The VM emits these; the daemon streams them; ``ktapctl`` renders them as
ktap's text or as JSON lines.  Histograms travel as keys and counts so the
client draws the bars (and several hosts' histograms can be merged).

One table, ``RECORD_TYPES``, maps each wire tag to its dataclass.  On the
wire a record is a msgpack map ``{"r": TAG, ...fields}``.

This module must not do I/O or format anything for a terminal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


class RecordError(ValueError):
    """A record on the wire is malformed."""


@dataclass(frozen=True)
class Text:
    """Output of print/printf/ansi.*: the exact characters, newlines included."""

    text: str
    time_ns: int = 0  # event time when -T asked for timestamps, else 0


@dataclass(frozen=True)
class Histogram:
    """print_hist(t, n): rows already sorted and cut to n.

    ``rows`` are (key, count) with key as the text to show; ``total`` is the
    sum over *all* entries (the bar width is count * 38 / total);
    ``truncated`` says rows were left out (the renderer prints ``...``);
    ``stack_keys`` says keys are multi-line stacks (frames, then the bar)."""

    rows: tuple[tuple[str, int], ...]
    total: int
    truncated: bool = False
    stack_keys: bool = False


@dataclass(frozen=True)
class Quantize:
    """hist(a): power-of-two buckets of an aggregate, DTrace quantize layout.

    ``buckets`` are (lower bound, count), ascending, already fenced with the
    zero rows DTrace prints around the range."""

    buckets: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Error:
    """A run-time error: ``error: MESSAGE (source:line)``."""

    message: str
    source: str = ""
    line: int = 0


@dataclass(frozen=True)
class Lost:
    """Data that did not reach the client, by cause (DESIGN decision 5).

    ``reason``: "ring" (kernel ring buffer overrun), "output" (client too
    slow), "budget" (handler stopped by its step budget), ... ."""

    reason: str
    count: int


@dataclass(frozen=True)
class Notice:
    """Status lines such as "Tracing... Hit Ctrl-C to end."."""

    text: str


Record = Text | Histogram | Quantize | Error | Lost | Notice

RECORD_TYPES: dict[str, type] = {
    "text": Text,
    "hist": Histogram,
    "quantize": Quantize,
    "error": Error,
    "lost": Lost,
    "notice": Notice,
}
_TAG_OF: dict[type, str] = {cls: tag for tag, cls in RECORD_TYPES.items()}


def to_wire(record: Record) -> dict:
    doc = asdict(record)
    doc["r"] = _TAG_OF[type(record)]
    return doc


def from_wire(doc: object) -> Record:
    if not isinstance(doc, dict) or doc.get("r") not in RECORD_TYPES:
        raise RecordError(f"unknown output record: {doc!r:.80}")
    cls = RECORD_TYPES[doc["r"]]
    try:
        kwargs = {f.name: doc[f.name] for f in fields(cls) if f.name in doc}
        if cls is Histogram:
            kwargs["rows"] = tuple((str(k), int(v)) for k, v in kwargs["rows"])
        elif cls is Quantize:
            kwargs["buckets"] = tuple((int(k), int(v)) for k, v in kwargs["buckets"])
        return cls(**kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"malformed {doc['r']} record: {exc}") from None
