"""Event specifications, filters and timer intervals: checked in form only.

The compiler cannot know which tracepoints or symbols exist (that is the
daemon's machine), so it checks that each spec is well formed and passes
the text on unchanged in ``Probe.events``; the daemon classifies and
resolves it.  The accepted forms (LANGUAGE.md "Events"):

    SUBSYS:EVENT                          tracepoint, shell globs on both parts
    probe:SYMBOL[+OFF][%return] [FETCHARGS]   kprobe
    probe:/path:SYMBOL|0xOFF[%return] [FETCHARGS]   uprobe
    sdt:/path:NAME                        SDT marker
    ftrace:function                       function tracer

and timers ``tick-N<unit>`` / ``profile-N<unit>`` with the units in
``INTERVAL_UNITS``.

Each check returns an error message or None; the caller attaches the span.
This module must not import anything outside the standard library and
protocol.
"""

from __future__ import annotations

import re

from protocol import limits

# Timer units and their length in nanoseconds (ktap's lib_timer.c).
INTERVAL_UNITS = {
    "s": 1_000_000_000,
    "sec": 1_000_000_000,
    "ms": 1_000_000,
    "msec": 1_000_000,
    "us": 1_000,
    "usec": 1_000,
}

_GLOB_PART = r"[A-Za-z0-9_.\-*?\[\]]+"
_TRACEPOINT_RE = re.compile(rf"{_GLOB_PART}:{_GLOB_PART}")
_SYMBOL_RE = re.compile(r"[A-Za-z_.*?\[\]][A-Za-z0-9_.*?\[\]@]*")
_OFFSET_RE = re.compile(r"0[xX][0-9a-fA-F]+")
# kprobe_events accepts SYMBOL+OFFSET too
_KPROBE_TARGET_RE = re.compile(_SYMBOL_RE.pattern + r"(\+(0[xX][0-9a-fA-F]+|[0-9]+))?")
_PATH_RE = re.compile(r"/[^\s:]*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_INTERVAL_RE = re.compile(r"([0-9]+)([a-z]+)")

_TRACEPOINT_HINT = "expected SUBSYSTEM:EVENT such as syscalls:sys_enter_openat"


def check_event_spec(spec: str) -> str | None:
    if len(spec) > limits.MAX_SPEC_LENGTH:
        return f"event specification longer than {limits.MAX_SPEC_LENGTH} characters"
    if _CONTROL_RE.search(spec):
        return "event specification contains a control character"
    if spec.startswith("probe:"):
        return _check_probe(spec)
    if spec.startswith("sdt:"):
        rest = spec[4:]
        path, sep, name = rest.rpartition(":")
        if not sep or not _PATH_RE.fullmatch(path) or not _SYMBOL_RE.fullmatch(name):
            return f"invalid SDT marker '{spec}': expected sdt:/path/to/binary:NAME"
        return None
    if spec.startswith("ftrace:"):
        if spec != "ftrace:function":
            return f"invalid ftrace event '{spec}': only ftrace:function exists"
        return None
    if "%return" in spec:
        return f"'%return' is only for probe: events, not in '{spec}'"
    if not _TRACEPOINT_RE.fullmatch(spec):
        return f"invalid tracepoint '{spec}': {_TRACEPOINT_HINT}"
    return None


def _check_probe(spec: str) -> str | None:
    head, _, fetchargs = spec.partition(" ")
    target = head[len("probe:"):]
    if target.endswith("%return"):
        target = target[: -len("%return")]
    if "%" in target:
        return f"invalid probe '{spec}': only '%return' may follow the symbol"
    if target.startswith("/"):
        path, sep, where = target.rpartition(":")
        if not sep or not path:
            return (f"invalid uprobe '{spec}': expected probe:/path/to/binary:SYMBOL "
                    "or probe:/path/to/binary:0xOFFSET")
        if not (_SYMBOL_RE.fullmatch(where) or _OFFSET_RE.fullmatch(where)):
            return f"invalid uprobe '{spec}': '{where}' is neither a symbol nor a 0x offset"
        return None
    if not _KPROBE_TARGET_RE.fullmatch(target):
        return f"invalid kprobe '{spec}': expected probe:SYMBOL[+OFFSET][%return] [FETCHARGS]"
    del fetchargs  # in the kernel's kprobe_events syntax; the kernel checks it
    return None


def check_filter(text: str) -> str | None:
    if not text.strip():
        return "empty filter"
    if len(text) > limits.MAX_SPEC_LENGTH:
        return f"filter longer than {limits.MAX_SPEC_LENGTH} characters"
    if _CONTROL_RE.search(text):
        return "filter contains a control character or newline"
    return None


def parse_interval(text: str) -> tuple[int, str | None]:
    """'100ms' -> (100_000_000, None); on error (0, message)."""
    m = _INTERVAL_RE.fullmatch(text)
    units = ", ".join(INTERVAL_UNITS)
    if not m or m.group(2) not in INTERVAL_UNITS:
        return 0, f"invalid interval '{text}': expected a number and a unit ({units})"
    period = int(m.group(1)) * INTERVAL_UNITS[m.group(2)]
    if period == 0:
        return 0, f"invalid interval '{text}': it must be greater than zero"
    if period > limits.INT64_MAX:
        return 0, f"invalid interval '{text}': too long"
    return period, None
