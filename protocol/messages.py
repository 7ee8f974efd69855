"""The messages of the ktapctl <-> ktapd protocol, and their wire form.

Every message is a frozen dataclass.  ``MESSAGE_TABLE`` is the one place
that says, for each message, who may send it, its wire ``type`` tag and
the kind of every field; ``to_wire`` and ``from_wire`` are driven by it,
and docs/protocol.md describes the same table in prose.

Wire form: a msgpack map ``{"type": TAG, field: value, ...}``.  Fields
with a default in the dataclass may be left out on the wire; unknown
fields are ignored (that is how a later protocol version adds optional
fields); every known field is type-checked on receipt, and a message that
fails is a protocol error.

This module must not do I/O, and must not know about connection states
(protocol/_state.py) or framing (protocol/framing.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields

from protocol import records
from protocol._state import CLIENT, SERVER
from protocol.limits import RuntimeLimits

__all__ = [
    "MESSAGE_TABLE",
    "PROTOCOL_VERSIONS",
    "Attach",
    "Detach",
    "Detached",
    "Ended",
    "ErrorMessage",
    "Exit",
    "Hello",
    "Kill",
    "ListEvents",
    "ListSessions",
    "ListSymbols",
    "Lost",
    "Message",
    "MessageError",
    "Output",
    "Reply",
    "Run",
    "ServerHello",
    "Started",
    "Status",
    "from_wire",
    "record_from_wire",
    "to_wire",
]

# Versions this implementation speaks; the server picks the highest that
# both sides list in their hellos.
PROTOCOL_VERSIONS: tuple[int, ...] = (1,)

# Bounds on list fields, so a peer cannot make us build huge structures
# out of a frame (the frame size already bounds the bytes).
MAX_ARGV = 4096
MAX_VERSIONS = 64
MAX_RECORDS = 65536
MAX_DATA_DEPTH = 32


class MessageError(ValueError):
    """A wire map is not a valid message; the text says which field and why."""


# --- client -> daemon -------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """Opens the conversation (KTAP_CMD_IOC_VERSION): versions the client speaks."""

    versions: tuple[int, ...] = PROTOCOL_VERSIONS
    client: str = ""


@dataclass(frozen=True)
class Run:
    """Start a session (KTAP_CMD_IOC_RUN with ktap_option_t).

    ``program`` is protocol.bytecode.encode(Program); ``argv[0]`` is the
    script name.  With ``workload`` the client started ``trace_pid`` itself
    and holds it until ``started``.  ``limits`` asks for RuntimeLimits
    values other than the defaults (the daemon caps them)."""

    program: bytes
    argv: tuple[str, ...] = ()
    verbose: bool = False
    trace_pid: int | None = None
    workload: bool = False
    trace_cpu: int | None = None
    print_timestamp: bool = False
    quiet: bool = False
    dry_run: bool = False
    detach: bool = False
    limits: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Exit:
    """Stop the attached session; trace_end runs (KTAP_CMD_IOC_EXIT)."""


@dataclass(frozen=True)
class ListSessions:
    """Sessions the caller may see (wire type ``list``)."""


@dataclass(frozen=True)
class Attach:
    """Stream session ``session``'s output (buffered output first) here."""

    session: int


@dataclass(frozen=True)
class Detach:
    """Leave the attached session running; the daemon answers ``detached``."""


@dataclass(frozen=True)
class Kill:
    """Stop session ``session`` (its owner or an administrator)."""

    session: int


@dataclass(frozen=True)
class ListEvents:
    """Available events, optionally matching a shell glob (ktap -le; wire type ``events``)."""

    glob: str | None = None


@dataclass(frozen=True)
class ListSymbols:
    """A binary's functions or SDT markers (ktap -lf / -lm; wire type ``symbols``)."""

    path: str
    what: str = "functions"  # or "markers"


@dataclass(frozen=True)
class Status:
    """Daemon status: version, uptime, sessions, kernel features."""


# --- daemon -> client -------------------------------------------------------


@dataclass(frozen=True)
class ServerHello:
    """The chosen protocol version (wire type ``hello``)."""

    version: int
    server: str = ""


@dataclass(frozen=True)
class Started:
    """Probes are on; ``probes`` events opened.  Release a held workload now."""

    session: int
    probes: int = 0


@dataclass(frozen=True)
class Detached:
    """The session keeps running without this connection."""

    session: int


@dataclass(frozen=True)
class Output:
    """A batch of output records (protocol/records.py)."""

    session: int
    records: tuple[records.Record, ...] = ()


@dataclass(frozen=True)
class Lost:
    """Output that did not reach the client, by cause; never dropped itself."""

    session: int
    reason: str
    count: int


@dataclass(frozen=True)
class Ended:
    """The session is over.  ``reason``: finished, exit, process exited, error,
    killed, daemon stopping, worker died: ..."""

    session: int
    ok: bool
    reason: str


@dataclass(frozen=True)
class Reply:
    """The answer to list, events, symbols, status, kill (and attach): ``of``
    names the request, ``data`` is plain msgpack data described in
    docs/protocol.md."""

    of: str
    data: object = None


@dataclass(frozen=True)
class ErrorMessage:
    """A refused request (``fatal`` false) or a protocol error (``fatal``
    true: the daemon closes the connection).  ``of`` names the refused
    request when there is one; refusing ``run`` or ``attach`` means no
    session is attached."""

    message: str
    fatal: bool = False
    of: str = ""


Message = (
    Hello
    | Run
    | Exit
    | ListSessions
    | Attach
    | Detach
    | Kill
    | ListEvents
    | ListSymbols
    | Status
    | ServerHello
    | Started
    | Detached
    | Output
    | Lost
    | Ended
    | Reply
    | ErrorMessage
)


# --- field kinds --------------------------------------------------------------
# A kind is a function from the decoded wire value to the dataclass value;
# it raises MessageError when the value does not fit.


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise MessageError(f"expected a string, got {type(v).__name__}")
    return v


def _int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise MessageError(f"expected an integer, got {type(v).__name__}")
    return v


def _count(v: object) -> int:
    v = _int(v)
    if v < 0:
        raise MessageError(f"expected a non-negative integer, got {v}")
    return v


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise MessageError(f"expected true or false, got {type(v).__name__}")
    return v


def _bytes(v: object) -> bytes:
    if not isinstance(v, bytes):
        raise MessageError(f"expected binary data, got {type(v).__name__}")
    return v


def _optional(kind: Callable[[object], object]) -> Callable[[object], object]:
    def check(v: object) -> object:
        return None if v is None else kind(v)

    return check


def _list_of(kind: Callable[[object], object], max_len: int) -> Callable[[object], tuple]:
    def check(v: object) -> tuple:
        if not isinstance(v, list | tuple):
            raise MessageError(f"expected an array, got {type(v).__name__}")
        if len(v) > max_len:
            raise MessageError(f"array of {len(v)} items, at most {max_len} allowed")
        return tuple(kind(x) for x in v)

    return check


_LIMIT_NAMES = frozenset(f.name for f in fields(RuntimeLimits))


def _limits(v: object) -> dict[str, int]:
    if not isinstance(v, dict):
        raise MessageError(f"expected a map, got {type(v).__name__}")
    out = {}
    for name, value in v.items():
        if name not in _LIMIT_NAMES:
            raise MessageError(
                f"unknown runtime limit {name!r} (known: {', '.join(sorted(_LIMIT_NAMES))})"
            )
        out[name] = _count(value)
    return out


def _symbol_kind(v: object) -> str:
    v = _str(v)
    if v not in ("functions", "markers"):
        raise MessageError(f"expected 'functions' or 'markers', got {v!r}")
    return v


# Field types of each output record, checked after records.from_wire built it.
_RECORD_FIELD_TYPES: dict[type, tuple[tuple[str, type], ...]] = {
    records.Text: (("text", str), ("time_ns", int)),
    records.Histogram: (("total", int), ("truncated", bool), ("stack_keys", bool)),
    records.Quantize: (),
    records.Error: (("message", str), ("source", str), ("line", int)),
    records.Lost: (("reason", str), ("count", int)),
    records.Notice: (("text", str),),
}


def record_from_wire(v: object) -> records.Record:
    """A record from its wire map, every field type-checked (MessageError if not)."""
    # Fast path for the record nearly every event produces (the daemon
    # relays each one from the worker to the client).
    if type(v) is dict and v.get("r") == "text" and len(v) == 3:
        text, time_ns = v.get("text"), v.get("time_ns")
        if type(text) is str and type(time_ns) is int:
            return records.Text(text, time_ns)
    try:
        record = records.from_wire(v)
    except records.RecordError as exc:
        raise MessageError(str(exc)) from None
    for name, kind in _RECORD_FIELD_TYPES[type(record)]:
        value = getattr(record, name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MessageError(
                f"{type(record).__name__} record field {name!r}: expected {kind.__name__}"
            )
    return record


def _data(v: object, depth: int = 0) -> object:
    """Plain msgpack data: nil, bool, int, str, bytes, arrays, maps with string keys."""
    if depth > MAX_DATA_DEPTH:
        raise MessageError(f"data nested deeper than {MAX_DATA_DEPTH}")
    if v is None or isinstance(v, bool | int | str | bytes):
        return v
    if isinstance(v, list | tuple):
        return [_data(x, depth + 1) for x in v]
    if isinstance(v, dict):
        return {_str(k): _data(x, depth + 1) for k, x in v.items()}
    raise MessageError(f"unexpected {type(v).__name__} in data")


_STR, _INT, _COUNT, _BOOL, _BYTES = _str, _int, _count, _bool, _bytes


@dataclass(frozen=True)
class MessageSpec:
    sender: str  # CLIENT or SERVER
    tag: str  # the wire "type"
    cls: type
    fields: tuple[tuple[str, Callable[[object], object]], ...]


# THE message table.  A test checks it against the dataclasses above.
MESSAGE_TABLE: tuple[MessageSpec, ...] = (
    MessageSpec(
        CLIENT, "hello", Hello, (("versions", _list_of(_count, MAX_VERSIONS)), ("client", _STR))
    ),
    MessageSpec(
        CLIENT,
        "run",
        Run,
        (
            ("program", _BYTES),
            ("argv", _list_of(_STR, MAX_ARGV)),
            ("verbose", _BOOL),
            ("trace_pid", _optional(_COUNT)),
            ("workload", _BOOL),
            ("trace_cpu", _optional(_COUNT)),
            ("print_timestamp", _BOOL),
            ("quiet", _BOOL),
            ("dry_run", _BOOL),
            ("detach", _BOOL),
            ("limits", _limits),
        ),
    ),
    MessageSpec(CLIENT, "exit", Exit, ()),
    MessageSpec(CLIENT, "list", ListSessions, ()),
    MessageSpec(CLIENT, "attach", Attach, (("session", _COUNT),)),
    MessageSpec(CLIENT, "detach", Detach, ()),
    MessageSpec(CLIENT, "kill", Kill, (("session", _COUNT),)),
    MessageSpec(CLIENT, "events", ListEvents, (("glob", _optional(_STR)),)),
    MessageSpec(CLIENT, "symbols", ListSymbols, (("path", _STR), ("what", _symbol_kind))),
    MessageSpec(CLIENT, "status", Status, ()),
    MessageSpec(SERVER, "hello", ServerHello, (("version", _COUNT), ("server", _STR))),
    MessageSpec(SERVER, "started", Started, (("session", _COUNT), ("probes", _COUNT))),
    MessageSpec(SERVER, "detached", Detached, (("session", _COUNT),)),
    MessageSpec(
        SERVER,
        "output",
        Output,
        (("session", _COUNT), ("records", _list_of(record_from_wire, MAX_RECORDS))),
    ),
    MessageSpec(SERVER, "lost", Lost, (("session", _COUNT), ("reason", _STR), ("count", _COUNT))),
    MessageSpec(SERVER, "ended", Ended, (("session", _COUNT), ("ok", _BOOL), ("reason", _STR))),
    MessageSpec(SERVER, "reply", Reply, (("of", _STR), ("data", _data))),
    MessageSpec(SERVER, "error", ErrorMessage, (("message", _STR), ("fatal", _BOOL), ("of", _STR))),
)

SPEC_BY_CLASS: dict[type, MessageSpec] = {spec.cls: spec for spec in MESSAGE_TABLE}
SPEC_BY_TAG: dict[tuple[str, str], MessageSpec] = {(s.sender, s.tag): s for s in MESSAGE_TABLE}
# Fields that may be left out on the wire: those with a dataclass default.
_OPTIONAL_FIELDS: dict[type, frozenset[str]] = {
    spec.cls: frozenset(
        f.name
        for f in fields(spec.cls)
        if f.default is not MISSING or f.default_factory is not MISSING
    )
    for spec in MESSAGE_TABLE
}


def to_wire(message: Message) -> dict:
    """The msgpack-able map for ``message`` (all fields, defaults included)."""
    spec = SPEC_BY_CLASS.get(type(message))
    if spec is None:
        raise MessageError(f"{type(message).__name__} is not a protocol message")
    doc: dict = {"type": spec.tag}
    for name, _kind in spec.fields:
        value = getattr(message, name)
        if name == "records":
            value = [_record_to_wire(r) for r in value]
        elif isinstance(value, tuple):
            value = list(value)
        doc[name] = value
    return doc


def _record_to_wire(record: records.Record) -> dict:
    if type(record) is records.Text:  # fast path, as in record_from_wire
        return {"r": "text", "text": record.text, "time_ns": record.time_ns}
    return records.to_wire(record)


def from_wire(doc: object, sender: str) -> Message:
    """Check a decoded wire map sent by ``sender`` and build its message."""
    if not isinstance(doc, dict):
        raise MessageError(f"a message must be a map, got {type(doc).__name__}")
    tag = doc.get("type")
    spec = SPEC_BY_TAG.get((sender, tag)) if isinstance(tag, str) else None
    if spec is None:
        raise MessageError(f"unknown {sender} message type {tag!r:.40}")
    kwargs = {}
    optional = _OPTIONAL_FIELDS[spec.cls]
    for name, kind in spec.fields:
        if name not in doc:
            if name in optional:
                continue
            raise MessageError(f"{tag}: missing field {name!r}")
        try:
            kwargs[name] = kind(doc[name])
        except MessageError as exc:
            raise MessageError(f"{tag}: field {name!r}: {exc}") from None
    return spec.cls(**kwargs)
