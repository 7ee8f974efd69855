"""The ktap VM: verified bytecode translated to Python and run per event.

Public API: ``Machine`` and ``Registration`` (machine.py), ``EventContext``
and ``FakeEvent`` (context.py).  The VM runs only what ktapd.verifier
accepted; it never imports the probes, trio or ktapctl.
"""

from ktapd.vm.context import EventContext, FakeEvent
from ktapd.vm.machine import Machine, Registration

__all__ = ["EventContext", "FakeEvent", "Machine", "Registration"]
