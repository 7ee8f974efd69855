"""Address to symbol: the kernel's (/proc/kallsyms) and a process's (maps + ELF).

Kernel stacks are symbolised against /proc/kallsyms, read once and kept as
a sorted address table.  User stacks are symbolised per process: its
/proc/PID/maps says which file backs an address and at what file offset,
the file's ELF symbol table (pyelftools, via uprobe.elf_functions) says
which function holds that offset.  Both caches are bounded.

Frames look like ``sym+0xoff``; an address with no symbol prints as hex.

This module must not open perf events or write anything; it only reads
/proc and ELF files.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass

from ktapd.probes import uprobe


class _Table:
    """Sorted start addresses with names; lookup finds the nearest start below."""

    def __init__(self, entries: list[tuple[int, str]]):
        entries.sort()
        self.starts = [a for a, _ in entries]
        self.names = [n for _, n in entries]

    def lookup(self, addr: int) -> tuple[str, int] | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0:
            return None
        return self.names[i], addr - self.starts[i]


_kernel: _Table | None = None


def _kallsyms() -> _Table:
    global _kernel
    if _kernel is None:
        entries = []
        try:
            with open("/proc/kallsyms") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in "tTwW":
                        addr = int(parts[0], 16)
                        if addr:  # zero everywhere when kptr_restrict hides them
                            entries.append((addr, parts[2]))
        except OSError:
            pass
        _kernel = _Table(entries)
    return _kernel


def preload_kernel() -> int:
    """Read /proc/kallsyms now; returns the number of symbols.  A worker must
    call this before it drops privileges: with perf_event_paranoid >= 2 an
    unprivileged reader sees every address as 0."""
    return len(_kallsyms().starts)


def kernel_symbol(addr: int) -> str:
    found = _kallsyms().lookup(addr)
    if found is None:
        return f"0x{addr:x}"
    name, off = found
    return f"{name}+0x{off:x}"


@dataclass(frozen=True)
class _Mapping:
    start: int
    end: int
    offset: int
    path: str


def _maps(pid: int) -> list[_Mapping]:
    found = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) < 6 or "x" not in parts[1]:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                found.append(_Mapping(lo, hi, int(parts[2], 16), parts[5].strip()))
    except OSError:
        pass
    return found


_elf_tables: dict[str, _Table] = {}
_MAX_ELF_TABLES = 64


def _file_table(path: str) -> _Table:
    table = _elf_tables.get(path)
    if table is None:
        try:
            entries = [(off, name) for name, off in uprobe.elf_functions(path).items()]
        except (OSError, uprobe.UprobeError):
            entries = []
        if len(_elf_tables) >= _MAX_ELF_TABLES:
            _elf_tables.clear()
        table = _elf_tables[path] = _Table(entries)
    return table


_symbolizers: dict[int, tuple[float, UserSymbolizer]] = {}
_SYMBOLIZER_TTL = 2.0  # seconds: mappings change (dlopen), but not per event


def user_symbolizer(pid: int) -> UserSymbolizer:
    """A cached UserSymbolizer for ``pid``, re-reading its maps every few seconds."""
    now = time.monotonic()
    cached = _symbolizers.get(pid)
    if cached is not None and now - cached[0] < _SYMBOLIZER_TTL:
        return cached[1]
    if len(_symbolizers) > 256:
        _symbolizers.clear()
    sym = UserSymbolizer(pid)
    _symbolizers[pid] = (now, sym)
    return sym


class UserSymbolizer:
    """Symbolises addresses of one process; reads its maps once."""

    def __init__(self, pid: int):
        self.pid = pid
        self.maps = _maps(pid)

    def symbol(self, addr: int) -> str:
        for m in self.maps:
            if m.start <= addr < m.end:
                if not m.path.startswith("/"):
                    break
                file_off = addr - m.start + m.offset
                found = _file_table(m.path).lookup(file_off)
                if found is None:
                    break
                name, off = found
                return f"{name}+0x{off:x}"
        return f"0x{addr:x}"
