"""Who may do what: one function, ``decide``, answers every request.

The peer's identity comes from the kernel (SO_PEERCRED, see
``peer_of_socket``), never from a message (DESIGN decision 7).  Today the
rules are two tiers:

- administrators (uid 0, or a member of a configured admin group) may do
  everything;
- everyone else may ask for status, the event list and symbol lists of
  files they can read, run scripts that open no kernel probes (plus the
  event kinds the configuration allows them), up to a number of sessions
  at a time, and see, attach to or stop only their own sessions.  (Builtins that expose kernel addresses are
  refused to them by the verifier: ``verify(program, admin=False)``.)

The multi-user tiers of DESIGN decision 7 (own-process tracing with -p and
-- cmd, per-kind allowlists) are a change to ``decide`` and the data it
is given, nothing else: callers pass a ``Request`` describing the action
and use the refusal text as the client's error message.

This module must not do I/O beyond reading credentials and file modes.
"""

from __future__ import annotations

import grp
import os
import socket
import stat
import struct
from dataclasses import dataclass, field

from ktapd.config import Config
from ktapd.probes import registry
from ktapd.probes.perf_event import ProbeError
from protocol.bytecode.program import PROBE_END, PROBE_PROFILE, PROBE_TICK, PROBE_TRACE, Program

# Actions a request may ask for.
RUN = "run"
SEE = "see"  # list a session, attach to it
STOP = "stop"  # kill a session
EVENTS = "events"
SYMBOLS = "symbols"
STATUS = "status"
ACTIONS = (RUN, SEE, STOP, EVENTS, SYMBOLS, STATUS)


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Request:
    action: str  # one of ACTIONS
    event_kinds: frozenset[str] = field(default_factory=frozenset)  # RUN: what the program opens
    owner: int | None = None  # SEE/STOP: the session's owner uid
    sessions_owned: int = 0  # RUN: sessions the peer has in the daemon now
    path: str = ""  # SYMBOLS: the file to read


def peer_of_socket(sock: socket.socket) -> Peer:
    """The connecting process's credentials, from the kernel."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(pid, uid, gid, frozenset(_supplementary_groups(pid)) | {gid})


def _supplementary_groups(pid: int) -> list[int]:
    # SO_PEERCRED has no supplementary groups; /proc has them for a live
    # peer.  A peer that exited already gets only its primary group.
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return [int(g) for g in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


def is_admin(peer: Peer, config: Config) -> bool:
    if peer.uid == 0:
        return True
    for name in config.admin_groups:
        try:
            if grp.getgrnam(name).gr_gid in peer.groups:
                return True
        except KeyError:
            continue
    return False


def event_kinds(program: Program) -> frozenset[str]:
    """The kinds of kernel or timer events a program's probe table asks for
    (names from the probe layer's table, ktapd/probes/registry.py KINDS)."""
    kinds = set()
    for probe in program.probes:
        if probe.kind == PROBE_TRACE:
            for spec in probe.events:
                try:
                    kinds.add(registry.classify(spec.strip()).name)
                except ProbeError:
                    kinds.add("unknown")
        elif probe.kind in (PROBE_TICK, PROBE_PROFILE):
            kinds.add(probe.kind)
        elif probe.kind != PROBE_END:
            kinds.add(probe.kind)
    return frozenset(kinds)


def decide(peer: Peer, request: Request, config: Config) -> str | None:
    """None when ``peer`` may do ``request``, else the reason it may not."""
    if is_admin(peer, config):
        return None
    action = request.action
    if action in (STATUS, EVENTS):
        return None
    if action == RUN:
        if request.sessions_owned >= config.max_sessions_per_user:
            return f"you already have {request.sessions_owned} sessions (at most {config.max_sessions_per_user})"
        refused = sorted(request.event_kinds - set(config.user_event_kinds))
        if refused:
            return (
                f"only administrators may open {', '.join(refused)} events; "
                "ordinary users may run scripts without probes"
            )
        return None
    if action in (SEE, STOP):
        if request.owner == peer.uid:
            return None
        return "that session belongs to another user"
    if action == SYMBOLS:
        return None if _may_read(peer, request.path) else f"{request.path}: permission denied"
    return f"unknown action {action!r}"


def _may_read(peer: Peer, path: str) -> bool:
    """Whether ``peer`` could open ``path`` for reading (mode bits, as the kernel checks them)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    # Directories on the way must be searchable too: a world-readable file
    # under a private directory (like /root) is not the peer's to read.
    if not _path_searchable(peer, os.path.dirname(os.path.abspath(path))):
        return False
    if st.st_uid == peer.uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid in peer.groups:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


def _path_searchable(peer: Peer, directory: str) -> bool:
    while True:
        try:
            st = os.stat(directory)
        except OSError:
            return False
        if st.st_uid == peer.uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in peer.groups:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            return False
        if directory == "/":
            return True
        directory = os.path.dirname(directory)
