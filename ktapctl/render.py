"""Output records -> text exactly as ktap printed it, or JSON lines.

The daemon sends data (protocol/records.py), never terminal text; this is
the one place that draws print_hist bars, DTrace-style quantize tables,
``error:`` lines and lost-data summaries (DESIGN decision 8).  Everything
here is a pure function of one record, so the language tests, the client
and the golden tests all print the same bytes.

Which stream a record belongs on (stdout, or stderr for lost-data notes)
is answered by ``stream_of``; writing is the caller's job.

This module must not do I/O, import trio or ktapd, or change a record's
meaning (sorting and cutting to n rows happen in the VM).
"""

from __future__ import annotations

import json

from protocol.records import (
    Error,
    Histogram,
    Lost,
    Notice,
    Quantize,
    Record,
    Text,
)

# --- print_hist (ktap master kp_tab.c: "%31s%s%s\n" and "%31s |%s%-7d\n") --
HIST_KEY_WIDTH = 31
HIST_BAR_WIDTH = 38
DISTRIBUTION = "------------- Distribution -------------"  # 40 characters, shared with DTrace
HIST_HEADER = f"{'value ':>{HIST_KEY_WIDTH}}{DISTRIBUTION} count\n"
# Keys wider than the column are cut to this many characters plus "...".
HIST_KEY_KEEP = HIST_KEY_WIDTH - 3

# --- hist() of an aggregate (DTrace dt_print_quantize / dt_print_quantline) --
QUANT_VALUE_WIDTH = 16
QUANT_BAR_WIDTH = 40
QUANT_HEADER = f"{'value':>{QUANT_VALUE_WIDTH}} {DISTRIBUTION:>41} count\n"

# Lost-data causes (protocol/records.py Lost.reason) in words: what was
# lost and why.  Unknown reasons from a newer daemon still print.
LOST_REASONS: dict[str, tuple[str, str]] = {
    "ring": ("events", "ring buffer overrun"),
    "output": ("output records", "client too slow"),
    "budget": ("handler runs", "step budget exceeded"),
    "table": ("table updates", "table full"),
}

STDOUT = "stdout"
STDERR = "stderr"


def stream_of(record: Record) -> str:
    """Where a record goes: lost-data notes to stderr, everything else to
    the output stream (stdout or -o), where ktap wrote `error:` lines too."""
    return STDERR if isinstance(record, Lost) else STDOUT


def render_text(record: Record) -> str:
    """The record as ktap printed it; every line ends with a newline except
    where a Text record's own text does not (print output is exact)."""
    renderer = _TEXT_RENDERERS.get(type(record))
    if renderer is None:
        raise TypeError(f"not an output record: {record!r:.80}")
    return renderer(record)


def render_json(record: Record) -> str:
    """The record as one JSON object on one line (no trailing newline).

    ``type`` names the kind (the wire tag); the other keys are the record's
    fields, with histogram rows and buckets as objects so that consumers
    need not know tuple positions."""
    renderer = _JSON_RENDERERS.get(type(record))
    if renderer is None:
        raise TypeError(f"not an output record: {record!r:.80}")
    return json.dumps(renderer(record), separators=(",", ":"))


# --- text ---------------------------------------------------------------


def _text(record: Text) -> str:
    if not record.time_ns:
        return record.text
    # ktap -T: "%5lu.%06lu: " before the event line (seconds.microseconds).
    seconds, rest = divmod(record.time_ns, 1_000_000_000)
    return f"{seconds:5d}.{rest // 1000:06d}: {record.text}"


def _histogram(record: Histogram) -> str:
    out = [HIST_HEADER]
    for key, count in record.rows:
        bar = _bar(count, record.total, HIST_BAR_WIDTH, rounded=False)
        if record.stack_keys:
            # A stack prints as its frames, then the bar under an empty key
            # column (ktap printed the raw key then the bar), then a blank
            # line so consecutive stacks stay apart.
            out.extend(frame + "\n" for frame in key.rstrip("\n").split("\n"))
            out.append(f"{'':>{HIST_KEY_WIDTH}} |{bar}{count}\n\n")
        else:
            out.append(f"{_hist_key(key):>{HIST_KEY_WIDTH}} |{bar}{count}\n")
    if record.truncated:
        out.append(f"{'...':>{HIST_KEY_WIDTH}} |\n")
    return "".join(out)


def _hist_key(key: str) -> str:
    if len(key) > HIST_KEY_WIDTH:
        return key[:HIST_KEY_KEEP] + "..."
    return key


def _quantize(record: Quantize) -> str:
    total = sum(abs(count) for _, count in record.buckets)
    out = [QUANT_HEADER]
    for value, count in record.buckets:
        bar = _bar(count, total, QUANT_BAR_WIDTH, rounded=True)
        out.append(f"{value:>{QUANT_VALUE_WIDTH}d} |{bar} {count}\n")
    return "".join(out)


def _bar(count: int, total: int, width: int, *, rounded: bool) -> str:
    """``count`` as a bar of '@' scaled to ``total``, padded to ``width``.

    ktap truncated (count*38/total); DTrace rounds to nearest.  A zero or
    negative total (ktap divided by zero) and negative counts draw no bar."""
    if total <= 0 or count <= 0:
        depth = 0
    elif rounded:
        depth = (2 * count * width + total) // (2 * total)
    else:
        depth = count * width // total
    depth = min(depth, width)
    return "@" * depth + " " * (width - depth)


def _error(record: Error) -> str:
    where = ""
    if record.source and record.line:
        where = f" ({record.source}:{record.line})"
    elif record.source:
        where = f" ({record.source})"
    return f"error: {record.message}{where}\n"


def _lost(record: Lost) -> str:
    what, why = LOST_REASONS.get(record.reason, ("events", record.reason))
    return f"lost {record.count} {what} ({why})\n"


def _notice(record: Notice) -> str:
    return record.text if record.text.endswith("\n") else record.text + "\n"


_TEXT_RENDERERS = {
    Text: _text,
    Histogram: _histogram,
    Quantize: _quantize,
    Error: _error,
    Lost: _lost,
    Notice: _notice,
}


# --- JSON -----------------------------------------------------------------


def _json_text(record: Text) -> dict:
    doc = {"type": "text", "text": record.text}
    if record.time_ns:
        doc["time_ns"] = record.time_ns
    return doc


def _json_histogram(record: Histogram) -> dict:
    return {
        "type": "hist",
        "rows": [{"key": key, "count": count} for key, count in record.rows],
        "total": record.total,
        "truncated": record.truncated,
        "stack_keys": record.stack_keys,
    }


def _json_quantize(record: Quantize) -> dict:
    return {
        "type": "quantize",
        "buckets": [{"value": value, "count": count} for value, count in record.buckets],
    }


def _json_error(record: Error) -> dict:
    return {
        "type": "error",
        "message": record.message,
        "source": record.source,
        "line": record.line,
    }


def _json_lost(record: Lost) -> dict:
    return {"type": "lost", "reason": record.reason, "count": record.count}


def _json_notice(record: Notice) -> dict:
    return {"type": "notice", "text": record.text}


_JSON_RENDERERS = {
    Text: _json_text,
    Histogram: _json_histogram,
    Quantize: _json_quantize,
    Error: _json_error,
    Lost: _json_lost,
    Notice: _json_notice,
}
