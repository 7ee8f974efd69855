"""What a handler can see of the event that fired it: the EventContext protocol.

The probe layer (ktapd/probes) implements ``EventContext`` for decoded
perf samples; the VM reads it only when a script asks (``execname``,
``arg1``, ``args.NAME``, ``stack()``...), so implementations may compute
fields lazily.  This module also holds the two other implementations the
VM needs: ``ProcessContext``, used when there is no event (main chunk,
trace_end, tick timers: task variables describe the daemon's own process
and event variables are an error), and ``FakeEvent``, an in-memory event
for tests.

It must not import ktapd.probes (the VM knows nothing of perf) nor the
rest of the VM except the error type.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Protocol

from ktapd.vm.values import KtapError

INVALID_EVENT_CONTEXT = "invalid event context"


class EventContext(Protocol):
    """One event, as the VM reads it.  Integers must be int64 values (the
    VM wraps anything wider, so a u64 field of all ones reads as -1)."""

    probename: str
    pid: int
    tid: int
    cpu: int
    time_ns: int
    uid: int
    execname: str
    argstr: str

    def arg(self, n: int) -> int | str | None:
        """Field n (0..9) in format-file order, common fields excluded; None if absent."""

    def field(self, name: str) -> int | str | None:
        """The field called ``name``; raises KeyError if the event has none."""

    def kernel_stack(self) -> list[str]:
        """Symbolised kernel frames, innermost first."""

    def user_stack(self) -> list[str]:
        """Symbolised user frames, innermost first."""

    def read_user_string(self, addr: int, limit: int) -> str | None:
        """NUL-terminated string at ``addr`` in the traced task, at most ``limit``
        characters; None if unreadable."""


class ProcessContext:
    """The context outside events: task variables describe this process,
    event variables raise "invalid event context" (LANGUAGE.md, tick handlers)."""

    time_ns = 0

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def tid(self) -> int:
        return threading.get_native_id()

    @property
    def uid(self) -> int:
        return os.getuid()

    @property
    def cpu(self) -> int:
        try:
            with open("/proc/thread-self/stat", "rb") as f:
                stat = f.read()
            # Field 39 (processor) counts from after the ")" closing comm.
            return int(stat[stat.rindex(b")") + 2:].split()[36])
        except (OSError, ValueError, IndexError):
            return 0

    @property
    def execname(self) -> str:
        try:
            with open("/proc/thread-self/comm", encoding="utf-8", errors="replace") as f:
                return f.read().rstrip("\n")
        except OSError:
            return ""

    @property
    def probename(self) -> str:
        raise KtapError(INVALID_EVENT_CONTEXT)

    @property
    def argstr(self) -> str:
        raise KtapError(INVALID_EVENT_CONTEXT)

    def arg(self, n: int) -> int | str | None:
        raise KtapError(INVALID_EVENT_CONTEXT)

    def field(self, name: str) -> int | str | None:
        raise KtapError(INVALID_EVENT_CONTEXT)

    def kernel_stack(self) -> list[str]:
        raise KtapError(INVALID_EVENT_CONTEXT)

    def user_stack(self) -> list[str]:
        raise KtapError(INVALID_EVENT_CONTEXT)

    def read_user_string(self, addr: int, limit: int) -> str | None:
        raise KtapError(INVALID_EVENT_CONTEXT)


@dataclass
class FakeEvent:
    """An event made of plain data, for tests and benchmarks."""

    probename: str = "fake_event"
    pid: int = 1
    tid: int = 1
    cpu: int = 0
    time_ns: int = 0
    uid: int = 0
    execname: str = "fake"
    argstr: str = ""
    args: tuple = ()
    fields: dict = dc_field(default_factory=dict)
    kstack: list = dc_field(default_factory=list)
    ustack: list = dc_field(default_factory=list)
    memory: dict = dc_field(default_factory=dict)  # address -> string

    def arg(self, n: int) -> int | str | None:
        return self.args[n] if n < len(self.args) else None

    def field(self, name: str) -> int | str | None:
        return self.fields[name]

    def kernel_stack(self) -> list[str]:
        return list(self.kstack)

    def user_stack(self) -> list[str]:
        return list(self.ustack)

    def read_user_string(self, addr: int, limit: int) -> str | None:
        text = self.memory.get(addr)
        return None if text is None else text[:limit]
