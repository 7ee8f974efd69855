"""The probe kinds, in one table, and ProbeSet: what the privileged daemon calls.

``KINDS`` lists every kind of event spec a script can name (tracepoint,
uprobe, sdt, kprobe, ftrace, and the tick/profile timers): how to
recognise its spec, and how to open it into perf events.  ``classify``
picks the row; ``ProbeSet.add_*`` runs its opener.

A ``ProbeSet`` is one tracing run's events: it creates dynamic events
(uprobes, SDT probes, kprobes) under the group name the caller passes
(the daemon uses ``ktapd_<session id>``), opens everything disabled
through one EventOpener (one ring per CPU), and on ``close()`` closes the
fds and removes the dynamic events.  ``cleanup_stale()`` removes dynamic
events left by a daemon that crashed (anything under ``ktapd_``).

This module must not know about sessions or the VM: a tag is an opaque
integer the caller gets back on every Event.
"""

from __future__ import annotations

import fnmatch
import os
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ktapd.probes import _perf_abi as abi
from ktapd.probes import kprobe, timers, tracefs, uprobe
from ktapd.probes.events import (
    KIND_FTRACE,
    KIND_KPROBE,
    KIND_PROFILE,
    KIND_SDT,
    KIND_TICK,
    KIND_TRACEPOINT,
    KIND_UPROBE,
    WEIGHTED_TRACEPOINTS,
    EventDesc,
)
from ktapd.probes.formats import EventLayout
from ktapd.probes.perf_event import (
    DEFAULT_WAKEUP_BYTES,
    EventOpener,
    OpenedEvents,
    ProbeError,
)

GROUP_PREFIX = uprobe.GROUP_PREFIX
NO_FUNCTION_TRACER = ("the function tracer is not usable on this kernel "
                      "(tracefs set_ftrace_filter is not accessible)")


@dataclass(frozen=True)
class ProbeKind:
    name: str
    prefix: str  # what a spec starts with ("" for tracepoints: SUBSYS:EVENT)
    matches: Callable[[str], bool]
    doc: str


KINDS: tuple[ProbeKind, ...] = (
    ProbeKind(KIND_UPROBE, "probe:/", lambda s: s.startswith("probe:/"),
              "probe:/path:SYMBOL|0xOFFSET[%return] [FETCHARGS]: a uprobe, globs on SYMBOL"),
    ProbeKind(KIND_KPROBE, "probe:", lambda s: s.startswith("probe:"),
              "probe:SYMBOL[%return] [FETCHARGS]: a kprobe (needs kprobe_events)"),
    ProbeKind(KIND_SDT, "sdt:", lambda s: s.startswith("sdt:"),
              "sdt:/path:[PROVIDER:]NAME: an SDT marker from .note.stapsdt, globs on NAME"),
    ProbeKind(KIND_FTRACE, "ftrace:", lambda s: s == "ftrace:function",
              "ftrace:function: the function tracer (with /ip==PATTERN/)"),
    ProbeKind(KIND_TRACEPOINT, "", lambda s: ":" in s and " " not in s.strip(),
              "SUBSYS:EVENT: tracepoints, shell globs on both parts"),
    ProbeKind(KIND_TICK, "tick-", lambda s: s.startswith("tick-"),
              "tick-N: a timer firing every N on one CPU"),
    ProbeKind(KIND_PROFILE, "profile-", lambda s: s.startswith("profile-"),
              "profile-N: cpu-clock sampling every N on every CPU"),
)


def classify(spec: str) -> ProbeKind:
    for kind in KINDS:
        if kind.matches(spec):
            return kind
    raise ProbeError(f"unknown event spec {spec!r} (expected SUBSYS:EVENT, probe:..., sdt:..., "
                     "ftrace:function)")


def list_events(glob: str = "*") -> list[str]:
    """``-le [GLOB]``: every tracepoint as ``subsys:event`` matching GLOB (a glob
    on the whole name, or ``SUBSYS:EVENT`` globs); our own dynamic events excluded."""
    tracefs.ensure_mounted()
    names = [f"{s}:{e}" for s, e in tracefs.list_events() if not s.startswith(GROUP_PREFIX)]
    return [n for n in names if fnmatch.fnmatchcase(n, glob)]


def cleanup_stale(prefix: str = GROUP_PREFIX) -> list[str]:
    """Remove every dynamic event whose group starts with ``prefix``; returns
    what was removed (``group/name``).  Call at daemon start."""
    tracefs.ensure_mounted()
    removed = []
    kinds = (uprobe, kprobe) if kprobe.available() else (uprobe,)
    for kind in kinds:
        for group, name in kind.list_defined(prefix):
            try:
                kind.remove(group, name)
                removed.append(f"{group}/{name}")
            except OSError:
                pass  # still in use (another daemon's live session): leave it
    return removed


def _raise_nofile_limit() -> None:
    # A glob such as syscalls:* opens hundreds of events per CPU.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class ProbeSet:
    """The events of one tracing run, opened disabled (privileged side)."""

    def __init__(self, group: str, *, pid: int | None = None, cpu: int | None = None,
                 wakeup_bytes: int = DEFAULT_WAKEUP_BYTES):
        uprobe.check_group(group)
        if not group.startswith(GROUP_PREFIX):
            raise ProbeError(f"probe group {group!r} must start with {GROUP_PREFIX!r}")
        tracefs.ensure_mounted()
        _raise_nofile_limit()
        self.group = group
        self.pid = pid
        self.cpu = cpu
        self.opener = EventOpener(pid=pid, cpu=cpu, wakeup_bytes=wakeup_bytes)
        self._dynamic: list[tuple[str, str]] = []  # (control file, event name) to remove
        self._names: set[str] = set()
        self.skipped: list[str] = []  # glob matches the kernel would not open, with reasons

    @property
    def opened(self) -> OpenedEvents:
        return self.opener.opened

    @property
    def descs(self) -> list[EventDesc]:
        return self.opener.opened.descs

    # --- adding events ----------------------------------------------------------
    def add_trace(self, tag: int, specs: Sequence[str], filter: str | None = None,
                  callchain: bool = False) -> list[EventDesc]:
        """Open the events of ``trace SPEC, SPEC /FILTER/``; returns their descs."""
        added = []
        for spec in specs:
            kind = classify(spec.strip())
            opener = _OPENERS[kind.name]
            added += opener(self, tag, spec.strip(), filter, callchain)
        return added

    def add_timer(self, tag: int, kind: str, period_ns: int,
                  callchain: bool = False) -> list[EventDesc]:
        """Open a ``tick-N`` or ``profile-N`` timer (kind is "tick" or "profile")."""
        try:
            timers.check_period(period_ns)
        except ValueError as exc:
            raise ProbeError(str(exc)) from None
        name = timers.period_name(kind, period_ns)
        desc = EventDesc(tag, kind, name, "cpu-clock", None, callchain, period_ns)
        if kind == KIND_TICK:
            # No perf event: the reader arms a timerfd for it (timers.py says why).
            desc = EventDesc(tag, kind, name, "timerfd", None, False, period_ns)
            self.opened.descs.append(desc)
        elif kind == KIND_PROFILE:
            self.opener.add(desc, type=timers.TYPE, config=timers.CONFIG,
                            sample_period=period_ns)
        else:
            raise ProbeError(f"unknown timer kind {kind!r}")
        return [desc]

    def add_probe(self, tag: int, probe, callchain: bool = False) -> list[EventDesc]:
        """Open a protocol.bytecode.program.Probe (kind "trace", "tick" or "profile")."""
        if probe.kind == "trace":
            return self.add_trace(tag, probe.events, probe.filter, callchain)
        if probe.kind in (KIND_TICK, KIND_PROFILE):
            return self.add_timer(tag, probe.kind, probe.period_ns, callchain)
        return []

    # --- lifecycle --------------------------------------------------------------
    # (Events start disabled; the reader's RingSet.enable() turns them on and
    # arms the tick timers, after its rings are mapped.)

    @property
    def has_dynamic_events(self) -> bool:
        """True when this set created uprobe/kprobe events in tracefs."""
        return bool(self._dynamic)

    def close(self) -> list[str]:
        """Close every fd and remove this set's dynamic events (idempotent).

        A dynamic event stays busy while any process still holds one of its
        fds or ring mappings (the worker): the kernel then refuses to remove
        it.  Those are returned (``group/name``) and kept; call close()
        again, or ``cleanup_stale(group)``, once the worker is gone."""
        self.opener.close()
        busy = []
        for control, name in reversed(self._dynamic):
            try:
                tracefs.append_line(control, f"-:{self.group}/{name}")
            except FileNotFoundError:
                pass  # already gone
            except OSError:
                busy.append((control, name))
        self._dynamic = list(reversed(busy))
        return [f"{self.group}/{name}" for _control, name in busy]

    def __enter__(self) -> ProbeSet:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- helpers for the openers ------------------------------------------------
    def _open_tracepoint(self, tag: int, kind: str, probename: str, layout: EventLayout,
                         filter: str | None, callchain: bool) -> EventDesc:
        spec = f"{layout.system}:{layout.name}"
        desc = EventDesc(tag, kind, probename, spec, layout, callchain,
                         weighted=spec in WEIGHTED_TRACEPOINTS)
        self.opener.add(desc, type=abi.PERF_TYPE_TRACEPOINT, config=layout.id, filter=filter)
        return desc

    def _new_name(self, place: str, retprobe: bool) -> str:
        existing = {n for _g, n in uprobe.list_defined(self.group)}
        return uprobe.event_name(place, retprobe, self._names | existing)


# --- openers, one per kind ---------------------------------------------------------------

def _open_tracepoints(ps: ProbeSet, tag, spec, filter, callchain) -> list[EventDesc]:
    system, _, event = spec.partition(":")
    if not system or not event:
        raise ProbeError(f"tracepoint spec must be SUBSYS:EVENT, got {spec!r}")
    globbed = any(c in spec for c in "*?[")
    matches = tracefs.match_events(system, event)
    if not matches:
        raise ProbeError(f"no tracepoint matches {spec!r}")
    descs = []
    for sys_name, ev_name in matches:
        if sys_name.startswith(GROUP_PREFIX) or (globbed and sys_name == "ftrace"):
            continue  # sessions' own dynamic events, and ftrace's internal ones for globs
        try:
            layout = tracefs.read_layout(sys_name, ev_name)
            descs.append(ps._open_tracepoint(tag, KIND_TRACEPOINT, ev_name, layout, filter,
                                             callchain))
        except (ProbeError, OSError) as exc:
            if not globbed or "rejected filter" in str(exc):
                raise ProbeError(str(exc)) from None
            ps.skipped.append(f"{sys_name}:{ev_name}: {exc}")
    if not descs:
        raise ProbeError(f"no tracepoint matching {spec!r} could be opened")
    return descs


def _define_dynamic(ps: ProbeSet, control: str, define: Callable[[str], None], place: str,
                    retprobe: bool) -> tuple[str, EventLayout]:
    name = ps._new_name(place, retprobe)
    try:
        define(name)
    except OSError as exc:  # TracefsError: the kernel's own words are in strerror
        raise ProbeError(exc.strerror or str(exc)) from None
    ps._dynamic.append((control, name))
    return name, tracefs.read_layout(ps.group, name)


def _open_uprobes(ps: ProbeSet, tag, spec, filter, callchain) -> list[EventDesc]:
    try:
        parsed = uprobe.parse_uprobe_spec(spec[len("probe:"):])
        places = uprobe.resolve_places(parsed)
    except (uprobe.UprobeError, OSError) as exc:
        raise ProbeError(f"{spec}: {exc}") from None
    descs = []
    for place, offset in places:
        def define(name, offset=offset):
            uprobe.define(ps.group, name, parsed.path, offset, parsed.retprobe, parsed.fetchargs)
        _name, layout = _define_dynamic(ps, "uprobe_events", define, place, parsed.retprobe)
        descs.append(ps._open_tracepoint(tag, KIND_UPROBE, place, layout, filter, callchain))
    return descs


def _open_sdt(ps: ProbeSet, tag, spec, filter, callchain) -> list[EventDesc]:
    body = spec[len("sdt:"):]
    path, sep, name_glob = body.rpartition(":")
    provider_glob = "*"
    if sep and ":" in path and not os.path.exists(path):  # sdt:/path:provider:name
        path, _, provider_glob = path.rpartition(":")
    if not sep or not path.startswith("/"):
        raise ProbeError(f"SDT spec must be sdt:/path:NAME, got {spec!r}")
    try:
        places = [p for p in uprobe.sdt_markers(os.path.realpath(path))
                  if fnmatch.fnmatchcase(p.marker.name, name_glob)
                  and fnmatch.fnmatchcase(p.marker.provider, provider_glob)]
    except (uprobe.UprobeError, OSError) as exc:
        raise ProbeError(f"{spec}: {exc}") from None
    if not places:
        raise ProbeError(f"no SDT marker matches {name_glob!r} in {path}")
    descs = []
    for p in places:
        try:
            fetch = uprobe.sdt_fetchargs(p.marker.args)
        except uprobe.UprobeError as exc:
            raise ProbeError(f"{spec}: {exc}") from None

        def define(name, p=p, fetch=fetch):
            uprobe.define(ps.group, name, os.path.realpath(path), p.offset, False, fetch,
                          ref_ctr_offset=p.semaphore_offset)
        _name, layout = _define_dynamic(ps, "uprobe_events", define, p.marker.name, False)
        descs.append(ps._open_tracepoint(tag, KIND_SDT, p.marker.name, layout, filter, callchain))
    return descs


def _open_kprobe(ps: ProbeSet, tag, spec, filter, callchain) -> list[EventDesc]:
    if not kprobe.available():
        raise ProbeError(f"cannot trace {spec}: {kprobe.NO_KPROBES}")
    try:
        parsed = kprobe.parse_kprobe_spec(spec[len("probe:"):])
    except kprobe.KprobeError as exc:
        raise ProbeError(f"{spec}: {exc}") from None

    def define(name):
        kprobe.define(ps.group, name, parsed)
    _name, layout = _define_dynamic(ps, "kprobe_events", define, parsed.symbol, parsed.retprobe)
    return [ps._open_tracepoint(tag, KIND_KPROBE, parsed.symbol, layout, filter, callchain)]


def _function_tracer_usable() -> bool:
    try:
        with open(tracefs.root() / "set_ftrace_filter") as f:
            f.read(1)
        return True
    except OSError:
        return False


def _open_ftrace(ps: ProbeSet, tag, spec, filter, callchain) -> list[EventDesc]:
    if not _function_tracer_usable():
        raise ProbeError(f"cannot trace {spec}: {NO_FUNCTION_TRACER}")
    layout = tracefs.read_layout("ftrace", "function")
    try:
        return [ps._open_tracepoint(tag, KIND_FTRACE, "function", layout, filter, callchain)]
    except ProbeError as exc:
        raise ProbeError(f"{exc} ({NO_FUNCTION_TRACER})") from None


def _not_in_trace(ps, tag, spec, filter, callchain):
    raise ProbeError(f"{spec!r} is a timer, not an event: write it as its own statement")


_OPENERS = {
    KIND_TRACEPOINT: _open_tracepoints,
    KIND_UPROBE: _open_uprobes,
    KIND_SDT: _open_sdt,
    KIND_KPROBE: _open_kprobe,
    KIND_FTRACE: _open_ftrace,
    KIND_TICK: _not_in_trace,
    KIND_PROFILE: _not_in_trace,
}
assert set(_OPENERS) == {k.name for k in KINDS}
