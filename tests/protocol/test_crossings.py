"""Messages crossing on the wire: any legal conversation, delivered late, stays legal.

Both ends send whatever their state table allows, in any interleaving with
delivery of what the other end sent earlier (FIFO per direction).  Nothing
either end receives may then be a protocol error, and when everything is
delivered both ends agree on the state.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import _state
from protocol.connection import CLIENT, NEED_DATA, SERVER, Connection
from protocol.messages import (
    SPEC_BY_CLASS,
    Attach,
    Detach,
    Detached,
    Ended,
    ErrorMessage,
    Exit,
    Hello,
    Kill,
    ListSessions,
    Lost,
    Output,
    Reply,
    Run,
    Started,
    Status,
)

CLIENT_MESSAGES = [
    Run(program=b""),
    Run(program=b"", detach=True),
    Attach(1),
    Exit(),
    Detach(),
    ListSessions(),
    Kill(1),
    Status(),
]
SERVER_MESSAGES = [
    Started(1),
    Output(1),
    Lost(1, "ring", 1),
    Ended(1, True, "exit"),
    Detached(1),
    Reply("status", None),
    ErrorMessage("refused", of="run"),
    ErrorMessage("refused", of="attach"),
    ErrorMessage("no session", of="kill"),
]


def _allowed(conn: Connection, message) -> bool:
    tag = SPEC_BY_CLASS[type(message)].tag
    key = _state.transition_key(tag, getattr(message, "fatal", False), getattr(message, "of", ""))
    return _state.next_state(conn.role, conn.state, key) is not None


def _greeted() -> tuple[Connection, Connection]:
    client, server = Connection(CLIENT), Connection(SERVER)
    server.receive_data(client.send(Hello()))
    server.next_event()
    client.receive_data(server.send(server.hello_reply("d")))
    client.next_event()
    return client, server


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["client", "server", "to_server", "to_client"]), st.integers(0, 50)
        ),
        max_size=60,
    )
)
def test_crossing_messages_never_break_the_protocol(steps):
    client, server = _greeted()
    wire = {CLIENT: [], SERVER: []}  # bytes in flight, by sender
    for action, choice in steps:
        if action in ("client", "server"):
            conn = client if action == "client" else server
            pool = CLIENT_MESSAGES if action == "client" else SERVER_MESSAGES
            options = [m for m in pool if _allowed(conn, m)]
            if options:
                wire[conn.role].append(conn.send(options[choice % len(options)]))
        else:
            sender = CLIENT if action == "to_server" else SERVER
            receiver = server if sender == CLIENT else client
            if wire[sender]:
                receiver.receive_data(wire[sender].pop(0))
                assert receiver.next_event() is not NEED_DATA  # raises on a protocol error
    for sender, receiver in ((CLIENT, server), (SERVER, client)):
        while wire[sender]:
            receiver.receive_data(wire[sender].pop(0))
            receiver.next_event()
    assert client.state == server.state


def test_a_refused_run_after_a_detach_leaves_nothing_pending():
    """run, then detach at once; the daemon refuses the run (its probes).
    The client must not wait for a `detached` that will never come."""
    client, server = _greeted()
    server.receive_data(client.send(Run(program=b"")))
    server.next_event()
    refusal = server.send(ErrorMessage("no tracepoint matches 'x:y'", of="run"))
    detach = client.send(Detach())
    server.receive_data(detach)
    server.next_event()
    client.receive_data(refusal)
    client.next_event()
    assert client.state == server.state == _state.IDLE
