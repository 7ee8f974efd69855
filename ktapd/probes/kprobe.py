"""Kernel probes (``probe:SYMBOL[%return] [FETCHARGS]``) through kprobe_events.

Many kernels (this project's VMs among them) are built without
CONFIG_KPROBE_EVENTS: then tracefs has no ``kprobe_events`` file and every
kprobe spec fails with one clear message, ``NO_KPROBES``.  Where the file
exists, a spec becomes one ``p:``/``r:`` line under the caller's group,
exactly like uprobe.py does for user space.

This module must not open perf events; it writes only kprobe_events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ktapd.probes import tracefs

NO_KPROBES = "this kernel has no kprobe events (CONFIG_KPROBE_EVENTS is not set)"


class KprobeError(ValueError):
    """A kprobe spec is malformed or kprobes are unavailable."""


@dataclass(frozen=True)
class KprobeSpec:
    symbol: str
    retprobe: bool
    fetchargs: tuple[str, ...]


_SYMBOL = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*(\+(0x[0-9a-fA-F]+|\d+))?$")
_FETCHARG_OK = re.compile(r"^[A-Za-z0-9_=%$@+\-().:\\\[\]]+$")


def available() -> bool:
    return tracefs.has_file("kprobe_events")


def parse_kprobe_spec(body: str) -> KprobeSpec:
    """``SYMBOL[%return] [FETCHARGS]`` (the part after ``probe:``)."""
    words = body.split()
    if not words:
        raise KprobeError("kprobe spec needs a symbol")
    symbol = words[0]
    retprobe = symbol.endswith("%return")
    if retprobe:
        symbol = symbol[: -len("%return")]
    if not _SYMBOL.match(symbol):
        raise KprobeError(f"bad kernel symbol {symbol!r}")
    for arg in words[1:]:
        if not _FETCHARG_OK.match(arg):
            raise KprobeError(f"bad fetcharg {arg!r}")
    return KprobeSpec(symbol, retprobe, tuple(words[1:]))


def define(group: str, name: str, spec: KprobeSpec) -> None:
    if not available():
        raise KprobeError(NO_KPROBES)
    line = f"{'r' if spec.retprobe else 'p'}:{group}/{name} {spec.symbol}"
    if spec.fetchargs:
        line += " " + " ".join(spec.fetchargs)
    tracefs.append_line("kprobe_events", line)


def remove(group: str, name: str) -> None:
    tracefs.append_line("kprobe_events", f"-:{group}/{name}")


def list_defined(prefix: str) -> list[tuple[str, str]]:
    found = []
    for line in tracefs.read_lines("kprobe_events"):
        head = line.split()[0]
        if ":" in head and "/" in head:
            group, name = head.split(":", 1)[1].split("/", 1)
            if group.startswith(prefix):
                found.append((group, name))
    return found
