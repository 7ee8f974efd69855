"""The connection state machine: every legal transition, in one table.

Rule 1 (after h11): everything that decides whether a message may be sent
or received in the current state lives in this file, as data.
Rule 2: the table does not know which side we are.  A Connection on either
end feeds it every message it sends and every message it receives, keyed
by *who sent it*, so neither side can drift from the other.

Theory of operation
-------------------
One state describes a connection as seen from one end::

    NEW --client hello--> GREETING --server hello--> IDLE
    IDLE --run / attach--> ATTACHED --ended / detached--> IDLE
    ATTACHED --detach--> LEAVING --detached / ended--> IDLE
    any --fatal error--> CLOSED (also a protocol error, or end of stream)

Messages cross on the wire, so both ends are briefly in different states;
the rows marked "crossing" accept what the other end may legitimately have
sent before it saw our last message: an ``exit`` or ``detach`` that meets an
``ended`` already on its way is ignored in IDLE, output that was already on
its way after a ``detach`` is still accepted in LEAVING.

Requests that do not touch the attached session (list, events, symbols,
status, kill) and their ``reply`` are allowed in every open state.  An
``error`` that refuses a ``run`` or an ``attach`` (its ``of`` field names
the request) sends an ATTACHED (or LEAVING) connection back to IDLE, and
is not allowed when no run or attach is pending; other non-fatal errors
leave the state alone; a fatal error closes.

This module must not import anything; it is pure data plus one lookup.
"""

from __future__ import annotations

__all__ = [
    "ATTACHED",
    "CLIENT",
    "CLOSED",
    "GREETING",
    "IDLE",
    "LEAVING",
    "NEW",
    "SERVER",
    "TRANSITIONS",
    "next_state",
    "transition_key",
]

# Roles: who sent a message.
CLIENT = "client"
SERVER = "server"

# States, as seen from one end.
NEW = "NEW"  # nothing exchanged yet
GREETING = "GREETING"  # client hello sent, server hello awaited
IDLE = "IDLE"  # greeted, no session attached
ATTACHED = "ATTACHED"  # a run or attach is in progress: the session's stream flows here
LEAVING = "LEAVING"  # detach sent; the stream may still deliver until `detached` / `ended`
CLOSED = "CLOSED"  # fatal error, protocol error, or end of stream

_REQUESTS = ("list", "events", "symbols", "status", "kill")
_OPEN = (IDLE, ATTACHED, LEAVING)


def _rows() -> dict[tuple[str, str, str], str]:
    t: dict[tuple[str, str, str], str] = {
        (CLIENT, NEW, "hello"): GREETING,
        (SERVER, GREETING, "hello"): IDLE,
        (CLIENT, IDLE, "run"): ATTACHED,
        (CLIENT, IDLE, "attach"): ATTACHED,
        (CLIENT, ATTACHED, "exit"): ATTACHED,
        (CLIENT, ATTACHED, "detach"): LEAVING,
        # crossing: the session ended (or detached) while these were in flight
        (CLIENT, IDLE, "exit"): IDLE,
        (CLIENT, IDLE, "detach"): IDLE,
        (CLIENT, LEAVING, "exit"): LEAVING,
        (CLIENT, LEAVING, "detach"): LEAVING,
        (SERVER, ATTACHED, "started"): ATTACHED,
        (SERVER, ATTACHED, "output"): ATTACHED,
        (SERVER, ATTACHED, "lost"): ATTACHED,
        (SERVER, ATTACHED, "ended"): IDLE,
        (SERVER, ATTACHED, "detached"): IDLE,  # reply to run with detach=true
        (SERVER, ATTACHED, "error:refused-session"): IDLE,
        # crossing: stream data sent before the server saw our detach
        (SERVER, LEAVING, "started"): LEAVING,
        (SERVER, LEAVING, "output"): LEAVING,
        (SERVER, LEAVING, "lost"): LEAVING,
        (SERVER, LEAVING, "ended"): IDLE,
        (SERVER, LEAVING, "detached"): IDLE,
        # a run refused after the client already asked to detach from it
        (SERVER, LEAVING, "error:refused-session"): IDLE,
    }
    for state in _OPEN:
        for request in _REQUESTS:
            t[(CLIENT, state, request)] = state
        t[(SERVER, state, "reply")] = state
        t[(SERVER, state, "error")] = state
    # A server may refuse anything before or after the greeting, fatally.
    for state in (NEW, GREETING, *_OPEN):
        t[(SERVER, state, "error:fatal")] = CLOSED
    return t


TRANSITIONS: dict[tuple[str, str, str], str] = _rows()

# Requests whose refusal means no session got attached.
SESSION_REQUESTS = ("run", "attach")


def transition_key(tag: str, fatal: bool = False, of: str = "") -> str:
    """The table key for a message: its type, refined for ``error``."""
    if tag != "error":
        return tag
    if fatal:
        return "error:fatal"
    if of in SESSION_REQUESTS:
        return "error:refused-session"
    return "error"


def next_state(sender: str, state: str, key: str) -> str | None:
    """The state after ``sender`` sent a message with ``key``, or None if illegal."""
    return TRANSITIONS.get((sender, state, key))
