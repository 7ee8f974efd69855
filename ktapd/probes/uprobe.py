"""User-space probes: ELF symbols, SDT markers, and uprobe_events definitions.

A uprobe spec (``probe:/bin/prog:func%return arg1=%di``) names a file, a
place (a symbol, a symbol glob, or a hex offset) and optional fetchargs.
The kernel wants a *file offset*, so symbols are read from the ELF symbol
tables (.symtab and .dynsym, via pyelftools) and their virtual addresses
mapped through the PT_LOAD segments.  SDT markers come from the
``.note.stapsdt`` notes that <sys/sdt.h> emits; their argument strings
(``-4@%edi``) become uprobe fetchargs.

Each probe becomes one line in tracefs ``uprobe_events`` under a group name
the caller chooses (the daemon uses ``ktapd_<session>``), so leftovers of a
crashed daemon can be found and removed by prefix.

This module must not open perf events; it writes only uprobe_events.
"""

from __future__ import annotations

import fnmatch
import os
import re
import struct
from dataclasses import dataclass

# Imported here, not lazily: a worker imports this module (through
# symbols.py) before it drops privileges and may not read site-packages after.
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ktapd.probes import tracefs

GROUP_PREFIX = "ktapd_"
MAX_EVENT_NAME = 64  # MAX_EVENT_NAME_LEN in the kernel, NUL included


class UprobeError(ValueError):
    """A uprobe or SDT spec cannot be resolved (no file, no symbol, bad ELF...)."""


# --- ELF ------------------------------------------------------------------------------

_function_cache: dict[tuple[str, int, int], dict[str, int]] = {}
_FUNC_TYPES = {"STT_FUNC", "STT_GNU_IFUNC"}


def _open_elf(path: str):
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise UprobeError(f"{path}: {exc.strerror}") from None
    try:
        return ELFFile(f), f
    except ELFError as exc:
        f.close()
        raise UprobeError(f"{path}: not an ELF file ({exc})") from None


def _vaddr_to_offset(elf, vaddr: int) -> int | None:
    for seg in elf.iter_segments():
        if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= vaddr < seg["p_vaddr"] + seg["p_filesz"]:
            return vaddr - seg["p_vaddr"] + seg["p_offset"]
    return None


def elf_functions(path: str) -> dict[str, int]:
    """Defined function symbols of an ELF file: name -> file offset."""
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    cached = _function_cache.get(key)
    if cached is not None:
        return cached
    elf, f = _open_elf(path)
    found: dict[str, int] = {}
    with f:
        for section_name in (".dynsym", ".symtab"):
            section = elf.get_section_by_name(section_name)
            if section is None:
                continue
            for sym in section.iter_symbols():
                if (sym["st_info"]["type"] in _FUNC_TYPES and sym["st_shndx"] != "SHN_UNDEF"
                        and sym["st_value"] and sym.name and sym.name not in found):
                    offset = _vaddr_to_offset(elf, sym["st_value"])
                    if offset is not None:
                        found[sym.name] = offset
    if len(_function_cache) > 32:
        _function_cache.clear()
    _function_cache[key] = found
    return found


# --- SDT notes --------------------------------------------------------------------------


@dataclass(frozen=True)
class SdtMarker:
    provider: str
    name: str
    pc: int  # virtual address of the marker's nop (link-time)
    base: int  # link-time address of .stapsdt.base
    semaphore: int  # virtual address of the semaphore, 0 if none
    args: str  # "-4@%edi 8@%rsi"


_NOTE_HEAD = struct.Struct("<III")
_STAPSDT_TYPE = 3


def parse_stapsdt_notes(data: bytes) -> list[SdtMarker]:
    """Parse the bytes of a .note.stapsdt section (64-bit little-endian notes)."""
    markers = []
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = _NOTE_HEAD.unpack_from(data, pos)
        pos += 12
        name = data[pos:pos + namesz].rstrip(b"\0")
        pos += (namesz + 3) & ~3
        desc = data[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if name != b"stapsdt" or ntype != _STAPSDT_TYPE or len(desc) < 24:
            continue
        pc, base, sem = struct.unpack_from("<QQQ", desc, 0)
        strings = desc[24:].split(b"\0")
        if len(strings) < 3:
            raise UprobeError("malformed .note.stapsdt entry")
        provider, marker, args = (s.decode("utf-8", "replace") for s in strings[:3])
        markers.append(SdtMarker(provider, marker, pc, base, sem, args))
    return markers


@dataclass(frozen=True)
class SdtPlace:
    marker: SdtMarker
    offset: int  # file offset of the marker
    semaphore_offset: int  # file offset of the semaphore (uprobe ref_ctr_offset), 0 if none


def sdt_markers(path: str) -> list[SdtPlace]:
    elf, f = _open_elf(path)
    with f:
        notes = elf.get_section_by_name(".note.stapsdt")
        if notes is None:
            return []
        base_section = elf.get_section_by_name(".stapsdt.base")
        places = []
        for m in parse_stapsdt_notes(notes.data()):
            pc = m.pc
            if base_section is not None and m.base:  # prelinked: shift by the base's move
                pc += base_section["sh_addr"] - m.base
            offset = _vaddr_to_offset(elf, pc)
            sem = _vaddr_to_offset(elf, m.semaphore) if m.semaphore else 0
            if offset is not None:
                places.append(SdtPlace(m, offset, sem or 0))
        return places


# x86-64 register names as sdt.h writes them -> pt_regs names the kernel accepts.
_X86_REGS = {}
for _full, _short in (("rax", "ax"), ("rbx", "bx"), ("rcx", "cx"), ("rdx", "dx"),
                      ("rsi", "si"), ("rdi", "di"), ("rbp", "bp"), ("rsp", "sp"),
                      ("rip", "ip")):
    _X86_REGS.update({_full: _short, "e" + _short: _short, _short: _short})
for _low, _short in (("al", "ax"), ("bl", "bx"), ("cl", "cx"), ("dl", "dx"), ("sil", "si"),
                     ("dil", "di"), ("bpl", "bp"), ("spl", "sp")):
    _X86_REGS[_low] = _short
for _n in range(8, 16):
    for _suffix in ("", "d", "w", "b"):
        _X86_REGS[f"r{_n}{_suffix}"] = f"r{_n}"

_SDT_ARG = re.compile(r"^(?P<size>-?\d+)@(?P<loc>.+)$")
_SDT_MEM = re.compile(r"^(?P<off>-?\d*)\((?P<reg>%\w+)\)$")


def sdt_fetchargs(args: str) -> list[str]:
    """Turn an SDT argument string into uprobe fetchargs (arg1=..., arg2=...)."""
    fetch = []
    for i, word in enumerate(args.split(), 1):
        m = _SDT_ARG.match(word)
        if not m:
            raise UprobeError(f"cannot read SDT argument {word!r}")
        size = int(m["size"])
        kind = f"{'s' if size < 0 else 'u'}{abs(size) * 8}" if abs(size) in (1, 2, 4, 8) else "u64"
        loc = m["loc"]
        if loc.startswith("$"):
            place = "\\" + loc[1:]
        elif loc.startswith("%"):
            reg = _X86_REGS.get(loc[1:])
            if reg is None:
                raise UprobeError(f"unknown register in SDT argument {word!r}")
            place = "%" + reg
        else:
            mem = _SDT_MEM.match(loc)
            reg = _X86_REGS.get(mem["reg"][1:]) if mem else None
            if reg is None:
                raise UprobeError(f"cannot read SDT argument {word!r}")
            off = int(mem["off"] or "0")
            place = f"{'+' if off >= 0 else '-'}{abs(off)}(%{reg})"
        fetch.append(f"arg{i}={place}:{kind}")
    return fetch


# --- specs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UprobeSpec:
    path: str
    place: str  # symbol glob or 0xOFFSET
    retprobe: bool
    fetchargs: tuple[str, ...]


_FETCHARG_OK = re.compile(r"^[A-Za-z0-9_=%$@+\-().:\\\[\]]+$")


def parse_uprobe_spec(body: str) -> UprobeSpec:
    """``/path:SYMBOL|0xOFFSET[%return] [FETCHARGS]`` (the part after ``probe:``)."""
    words = body.split()
    if not words or ":" not in words[0]:
        raise UprobeError(f"uprobe spec needs /path:SYMBOL, got {body!r}")
    path, place = words[0].rsplit(":", 1)
    retprobe = place.endswith("%return")
    if retprobe:
        place = place[: -len("%return")]
    if not path.startswith("/") or not place:
        raise UprobeError(f"uprobe spec needs an absolute path and a symbol: {body!r}")
    for arg in words[1:]:
        if not _FETCHARG_OK.match(arg):
            raise UprobeError(f"bad fetcharg {arg!r} in {body!r}")
    return UprobeSpec(os.path.realpath(path), place, retprobe, tuple(words[1:]))


def resolve_places(spec: UprobeSpec) -> list[tuple[str, int]]:
    """(symbol or offset text, file offset) for every place the spec names."""
    if re.fullmatch(r"0x[0-9a-fA-F]+", spec.place):
        if not os.path.isfile(spec.path):
            raise UprobeError(f"{spec.path}: no such file")
        return [(spec.place, int(spec.place, 16))]
    functions = elf_functions(spec.path)
    if any(c in spec.place for c in "*?["):
        found = sorted((n, o) for n, o in functions.items() if fnmatch.fnmatchcase(n, spec.place))
    else:
        found = [(spec.place, functions[spec.place])] if spec.place in functions else []
    if not found:
        raise UprobeError(f"no function matches {spec.place!r} in {spec.path}")
    return found


def check_group(group: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,40}", group):
        raise UprobeError(f"bad probe group name {group!r}")


def event_name(place: str, retprobe: bool, taken: set[str]) -> str:
    """A tracefs event name for a place: [A-Za-z0-9_], unique in the group."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", place)
    if not base or base[0].isdigit():
        base = "p_" + base
    if retprobe:
        base += "__return"
    base = base[: MAX_EVENT_NAME - 8]
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def define(group: str, name: str, path: str, offset: int, retprobe: bool,
           fetchargs: tuple[str, ...] | list[str] = (), ref_ctr_offset: int = 0) -> None:
    """Add one uprobe event ``group/name`` to uprobe_events."""
    place = f"{path}:0x{offset:x}"
    if ref_ctr_offset:
        place += f"(0x{ref_ctr_offset:x})"
    line = f"{'r' if retprobe else 'p'}:{group}/{name} {place}"
    if fetchargs:
        line += " " + " ".join(fetchargs)
    tracefs.append_line("uprobe_events", line)


def remove(group: str, name: str) -> None:
    tracefs.append_line("uprobe_events", f"-:{group}/{name}")


def list_defined(prefix: str = GROUP_PREFIX) -> list[tuple[str, str]]:
    """(group, event) of every uprobe whose group starts with ``prefix``."""
    found = []
    for line in tracefs.read_lines("uprobe_events"):
        head = line.split()[0]  # "p:group/event"
        if ":" in head and "/" in head:
            group, name = head.split(":", 1)[1].split("/", 1)
            if group.startswith(prefix):
                found.append((group, name))
    return found


def list_functions(path: str) -> list[str]:
    """``-lf DSO``: every function as ``probe:DSO:sym``."""
    real = os.path.realpath(path)
    return [f"probe:{real}:{name}" for name in sorted(elf_functions(real))]


def list_markers(path: str) -> list[str]:
    """``-lm DSO``: every SDT marker as ``sdt:DSO:provider:name``."""
    real = os.path.realpath(path)
    return [f"sdt:{real}:{p.marker.provider}:{p.marker.name}" for p in sdt_markers(real)]
