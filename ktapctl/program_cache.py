"""A per-user cache of compiled scripts: running the same script again skips the compiler.

Importing the compiler (lark, the syntax tree, resolve, codegen) is most of
ktapctl's own start-up, about 80 ms here, while compiling a one-liner
takes under a millisecond.  So a successful compile is stored as its
encoded Program, and ``load`` finds it again by a SHA-256 over:

* the compiler's own files (path, size and mtime of ktapctl/lang/* and
  protocol/bytecode/*, protocol/limits.py): a changed or reinstalled
  compiler never reuses bytecode made by the old one;
* the source name (it is arg[0] and in the Program) and the source text.

Only successful compiles are stored, so diagnostics always come from the
compiler itself.  What is loaded is decoded with the same checks as a
.kpc file, and the daemon verifies it like any program.

The cache lives in ``$XDG_CACHE_HOME/ktap/programs`` (``~/.cache/...``).
Its directory and files must belong to the user and be writable by nobody
else: under sudo, a cache another user could write would choose the
program root runs.  Anything odd (permissions, a bad file, a full disk)
means no cache, never an error.  ``KTAP_COMPILE_CACHE=0`` turns it off.

This module must not import the compiler (that is what it saves) or talk
to the daemon.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat

DISABLE_ENV = "KTAP_COMPILE_CACHE"  # "0": never read or write the cache
MAX_ENTRIES = 512  # past this many programs, the older half is removed
SUFFIX = ".kpc"

_HERE = os.path.dirname(os.path.abspath(__file__))
_LANG_DIR = os.path.join(_HERE, "lang")
_PROTOCOL_DIR = os.path.join(os.path.dirname(_HERE), "protocol")  # installed beside ktapctl
# What the bytecode of a script depends on besides its text: the compiler
# and the bytecode format.
COMPILER_PATHS = (
    _LANG_DIR,
    os.path.join(_PROTOCOL_DIR, "bytecode"),
    os.path.join(_PROTOCOL_DIR, "limits.py"),
)


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "1") != "0"


def compiler_fingerprint() -> bytes:
    """(path, size, mtime) of every compiler file, as bytes to hash."""
    parts = []
    for path in COMPILER_PATHS:
        try:
            if os.path.isdir(path):
                entries = sorted(
                    e.path
                    for e in os.scandir(path)
                    if e.is_file() and e.name.endswith((".py", ".lark"))
                )
            else:
                entries = [path]
            for entry in entries:
                st = os.stat(entry)
                parts.append(f"{entry}\0{st.st_size}\0{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}\0missing")
    return "\n".join(parts).encode()


def key(source: str, name: str) -> str:
    digest = hashlib.sha256()
    digest.update(compiler_fingerprint())
    for part in (name, source):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def cache_dir() -> str | None:
    """The cache directory, created if needed; None when it is not private to us."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "ktap", "programs")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _private(os.lstat(directory)):
            return None
    except OSError:
        return None
    return directory


def _private(st: os.stat_result) -> bool:
    return (
        st.st_uid == os.geteuid()
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        and not stat.S_ISLNK(st.st_mode)
    )


def load(source: str, name: str):
    """The cached Program for this source and name, or None."""
    if not enabled():
        return None
    directory = cache_dir()
    if directory is None:
        return None
    path = os.path.join(directory, key(source, name) + SUFFIX)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _private(os.fstat(fd)):
            return None
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = f.read()
    except OSError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    from protocol.bytecode.encoding import DecodeError, decode

    try:
        program = decode(data)
    except DecodeError:
        return None
    return program if program.source_name == name else None


def store(source: str, name: str, program) -> None:
    """Remember a successful compile (best effort)."""
    if not enabled():
        return
    directory = cache_dir()
    if directory is None:
        return
    import tempfile  # only on a miss: its import costs more than a hit

    from protocol.bytecode.encoding import encode

    path = os.path.join(directory, key(source, name) + SUFFIX)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".new-", suffix=SUFFIX)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode(program))
        os.replace(tmp, path)  # readers see the old file or the whole new one
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    _trim(directory)


def _trim(directory: str) -> None:
    """Keep the cache bounded: past MAX_ENTRIES, remove the older half."""
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(SUFFIX)]
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        for entry in entries[: len(entries) // 2]:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    except OSError:
        pass
