"""tracefs: finding it, mounting it, and reading and writing its files.

The daemon (root) uses this to list events, read an event's id and format,
and add or remove dynamic events (uprobe_events, kprobe_events).  The
unprivileged worker never calls it: what it needs travels as EventLayout
data (formats.py).

This module must not open perf events or know about sessions; it only
touches files under the tracefs mount.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import subprocess
from pathlib import Path

from ktapd.probes.formats import EventLayout, parse_format

DEFAULT_MOUNT = Path("/sys/kernel/tracing")
_LEGACY_MOUNT = Path("/sys/kernel/debug/tracing")


class TracefsError(OSError):
    """tracefs is missing, cannot be mounted, or refused a write."""


_root: Path | None = None


def _mounted_at(path: Path) -> bool:
    try:
        with open("/proc/mounts") as mounts:
            return any(line.split()[1] == str(path) and line.split()[2] == "tracefs"
                       for line in mounts)
    except OSError:
        return False


def ensure_mounted() -> Path:
    """The tracefs root, mounting it at /sys/kernel/tracing when it is absent."""
    global _root
    if _root is not None and (_root / "events").is_dir():
        return _root
    for candidate in (DEFAULT_MOUNT, _LEGACY_MOUNT):
        if (candidate / "events").is_dir():
            _root = candidate
            return _root
    if not _mounted_at(DEFAULT_MOUNT):
        result = subprocess.run(["mount", "-t", "tracefs", "nodev", str(DEFAULT_MOUNT)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise TracefsError(errno.ENOENT, "cannot mount tracefs at "
                               f"{DEFAULT_MOUNT}: {result.stderr.strip() or 'mount failed'}")
    if not (DEFAULT_MOUNT / "events").is_dir():
        raise TracefsError(errno.ENOENT, "tracefs is mounted but has no events directory")
    _root = DEFAULT_MOUNT
    return _root


def root() -> Path:
    return ensure_mounted()


def has_file(name: str) -> bool:
    return (root() / name).exists()


def list_events() -> list[tuple[str, str]]:
    """Every (system, event) that has a format file, sorted."""
    return match_events("*", "*")


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _names_matching(directory: Path, pattern: str) -> list[str]:
    """Entries of ``directory`` matching the glob ``pattern``.  A pattern
    without wildcards is looked up directly: resolving one event must not
    list all of tracefs (thousands of entries, tens of milliseconds)."""
    if not _is_glob(pattern):
        return [pattern] if "/" not in pattern and pattern not in ("", ".", "..") else []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def match_events(system_glob: str, event_glob: str) -> list[tuple[str, str]]:
    """Events (with a format file) whose system and name match the shell
    globs, sorted.  Only the systems that match are listed."""
    events_dir = root() / "events"
    found = []
    for system in _names_matching(events_dir, system_glob):
        sysdir = events_dir / system
        for event in _names_matching(sysdir, event_glob):
            if os.path.isfile(sysdir / event / "format"):
                found.append((system, event))
    found.sort()
    return found


def read_layout(system: str, event: str) -> EventLayout:
    path = root() / "events" / system / event / "format"
    return parse_format(path.read_text(), system)


def error_log_tail() -> str:
    """The last line of tracefs error_log: why the kernel refused a dynamic event."""
    try:
        lines = (root() / "error_log").read_text().strip().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-3:]) if lines else ""


def _clear_error_log() -> None:
    try:
        (root() / "error_log").write_text("")
    except OSError:
        pass


def append_line(name: str, line: str) -> None:
    """Append one definition to a control file such as uprobe_events."""
    _clear_error_log()
    try:
        fd = os.open(root() / name, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        detail = error_log_tail()
        raise TracefsError(exc.errno, f"{name}: kernel refused {line!r}: {exc.strerror}"
                           + (f"\n{detail}" if detail else "")) from None


def read_lines(name: str) -> list[str]:
    try:
        return [ln for ln in (root() / name).read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return []
