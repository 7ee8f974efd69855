"""The sans-IO Connection: round trips, states, version negotiation, bad bytes."""

from __future__ import annotations

import dataclasses
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import _state, records
from protocol.connection import (
    CLIENT,
    CLOSED_BY_PEER,
    NEED_DATA,
    SERVER,
    Connection,
    LocalProtocolError,
    RemoteProtocolError,
)
from protocol.framing import MAX_FRAME
from protocol.messages import (
    MESSAGE_TABLE,
    Attach,
    Detach,
    Detached,
    Ended,
    ErrorMessage,
    Exit,
    Hello,
    Kill,
    ListEvents,
    ListSessions,
    ListSymbols,
    Lost,
    Output,
    Reply,
    Run,
    ServerHello,
    Started,
    Status,
)
from protocol.testing import ConnectionPair


def _frame(doc) -> bytes:
    payload = msgpack.packb(doc, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def _greeted_server() -> Connection:
    server = Connection(SERVER)
    server.receive_data(_frame({"type": "hello", "versions": [1], "client": "x"}))
    assert isinstance(server.next_event(), Hello)
    server.send(server.hello_reply("d"))
    return server


def test_message_table_matches_the_dataclasses():
    for spec in MESSAGE_TABLE:
        assert [name for name, _ in spec.fields] == [
            f.name for f in dataclasses.fields(spec.cls)
        ], spec.tag


def test_hello_negotiates_the_highest_common_version():
    client = Connection(CLIENT, versions=(1, 2, 3))
    server = Connection(SERVER, versions=(1, 2))
    server.receive_data(client.send(Hello(versions=(1, 2, 3), client="c")))
    assert server.next_event() == Hello(versions=(1, 2, 3), client="c")
    reply = server.hello_reply("d")
    assert reply == ServerHello(version=2, server="d")
    client.receive_data(server.send(reply))
    assert client.next_event() == reply
    assert client.version == server.version == 2
    assert client.state == server.state == _state.IDLE
    assert server.peer_name == "c" and client.peer_name == "d"


def test_no_common_version_is_a_remote_error_and_the_server_may_still_explain():
    client = Connection(CLIENT, versions=(7,))
    server = Connection(SERVER)
    server.receive_data(client.send(Hello(versions=(7,), client="c")))
    with pytest.raises(RemoteProtocolError, match="no common protocol version"):
        server.next_event()
    data = server.send(ErrorMessage("no common protocol version", fatal=True))
    client.receive_data(data)
    assert client.next_event() == ErrorMessage("no common protocol version", fatal=True)
    assert client.state == _state.CLOSED


def test_server_must_choose_an_offered_version():
    client = Connection(CLIENT)
    client.send(Hello(versions=(1,)))
    client.receive_data(_frame({"type": "hello", "version": 9, "server": "d"}))
    with pytest.raises(RemoteProtocolError, match="version 9"):
        client.next_event()


def test_every_message_round_trips():
    pair = ConnectionPair()
    pair.send(CLIENT, ListSessions())
    pair.send(SERVER, Reply("list", [{"session": 1, "owner": 0}]))
    pair.send(CLIENT, ListEvents(glob="sched:*"))
    pair.send(CLIENT, ListEvents())
    pair.send(SERVER, Reply("events", ["sched:sched_switch"]))
    pair.send(CLIENT, ListSymbols(path="/bin/true", what="markers"))
    pair.send(SERVER, Reply("symbols", {"names": [], "nested": {"a": [1, b"x", None, True]}}))
    pair.send(CLIENT, Status())
    pair.send(SERVER, Reply("status", {"version": "0.5", "uptime": 3}))
    pair.send(CLIENT, Kill(session=4))
    pair.send(SERVER, ErrorMessage("no session 4", of="kill"))
    run = Run(
        program=b"\x00\x01",
        argv=("a.kp", "1"),
        verbose=True,
        trace_pid=42,
        workload=True,
        trace_cpu=3,
        print_timestamp=True,
        quiet=True,
        dry_run=True,
        detach=False,
        limits={"string_bytes": 1024},
    )
    pair.send(CLIENT, run)
    assert pair.client.state == pair.server.state == _state.ATTACHED
    pair.send(SERVER, Started(session=1, probes=3))
    every_record = (
        records.Text("hi\n", 5),
        records.Histogram((("read", 3), ("write", 1)), 4, True, False),
        records.Quantize(((0, 0), (1, 2), (2, 0))),
        records.Error("divide 0", "a.kp", 3),
        records.Lost("ring", 7),
        records.Notice("Tracing... Hit Ctrl-C to end."),
    )
    pair.send(SERVER, Output(session=1, records=every_record))
    pair.send(SERVER, Lost(session=1, reason="output", count=9))
    pair.send(CLIENT, Exit())
    pair.send(SERVER, Ended(session=1, ok=True, reason="exit"))
    assert pair.client.state == pair.server.state == _state.IDLE
    pair.send(CLIENT, Attach(session=2))
    pair.send(SERVER, Reply("attach", {"session": 2}))
    pair.send(CLIENT, Detach())
    assert pair.client.state == _state.LEAVING
    pair.send(SERVER, Output(session=2, records=()))
    pair.send(SERVER, Detached(session=2))
    assert pair.client.state == pair.server.state == _state.IDLE
    pair.send(CLIENT, Run(program=b"", detach=True))
    pair.send(SERVER, Detached(session=3))
    assert pair.client.state == _state.IDLE


def test_refused_run_returns_to_idle_but_other_refusals_do_not():
    pair = ConnectionPair()
    pair.send(CLIENT, Run(program=b"junk"))
    pair.send(SERVER, ErrorMessage("kill: not yours", of="kill"))
    assert pair.client.state == _state.ATTACHED
    pair.send(SERVER, ErrorMessage("bad bytecode", of="run"))
    assert pair.client.state == pair.server.state == _state.IDLE


def test_exit_crossing_ended_is_accepted():
    pair = ConnectionPair()
    pair.send(CLIENT, Run(program=b""))
    to_client = pair.server.send(Ended(session=1, ok=True, reason="finished"))
    to_server = pair.client.send(Exit())
    pair.server.receive_data(to_server)
    assert pair.server.next_event() == Exit()
    pair.client.receive_data(to_client)
    assert pair.client.next_event() == Ended(session=1, ok=True, reason="finished")
    assert pair.client.state == pair.server.state == _state.IDLE


def test_detach_crossing_ended_is_accepted():
    pair = ConnectionPair()
    pair.send(CLIENT, Run(program=b""))
    to_client = pair.server.send(Ended(session=1, ok=False, reason="error"))
    to_server = pair.client.send(Detach())
    pair.server.receive_data(to_server)
    assert pair.server.next_event() == Detach()
    pair.client.receive_data(to_client)
    pair.client.next_event()
    assert pair.client.state == pair.server.state == _state.IDLE


@pytest.mark.parametrize(
    ("sender", "message"),
    [
        (SERVER, Started(session=1)),  # nothing attached
        (SERVER, Output(session=1)),
        (SERVER, Ended(session=1, ok=True, reason="x")),
        (SERVER, Detached(session=1)),
        (CLIENT, Hello()),  # twice
        (SERVER, ErrorMessage("refused", of="run")),  # no run to refuse
    ],
)
def test_messages_out_of_state_are_local_errors(sender, message):
    pair = ConnectionPair()
    conn = pair.client if sender == CLIENT else pair.server
    with pytest.raises(LocalProtocolError):
        conn.send(message)
    assert conn.state == _state.CLOSED


def test_run_while_attached_is_a_remote_error():
    server = _greeted_server()
    server.receive_data(_frame({"type": "run", "program": b""}))
    server.next_event()
    server.receive_data(_frame({"type": "run", "program": b""}))
    with pytest.raises(RemoteProtocolError, match="may not send 'run' in state ATTACHED"):
        server.next_event()


def test_nothing_before_hello():
    server = Connection(SERVER)
    server.receive_data(_frame({"type": "status"}))
    with pytest.raises(RemoteProtocolError, match="state NEW"):
        server.next_event()


def test_clean_end_of_stream():
    server = _greeted_server()
    server.receive_data(b"")
    assert server.next_event() is CLOSED_BY_PEER


def test_byte_at_a_time_delivery():
    server = Connection(SERVER)
    data = Connection(CLIENT).send(Hello(versions=(1,), client="slow"))
    for i in range(len(data)):
        assert server.next_event() is NEED_DATA
        server.receive_data(data[i : i + 1])
    assert server.next_event() == Hello(versions=(1,), client="slow")


@pytest.mark.parametrize(
    ("doc", "complaint"),
    [
        ([1, 2], "must be a map"),
        ({"type": "nope"}, "unknown client message type"),
        ({"type": "started", "session": 1}, "unknown client message type"),  # server-only
        ({"type": "run"}, "missing field 'program'"),
        ({"type": "run", "program": "text"}, "expected binary data"),
        ({"type": "run", "program": b"", "argv": [1]}, "expected a string"),
        ({"type": "run", "program": b"", "trace_pid": -1}, "non-negative"),
        ({"type": "run", "program": b"", "quiet": 1}, "true or false"),
        ({"type": "run", "program": b"", "limits": {"bogus": 1}}, "unknown runtime limit"),
        ({"type": "run", "program": b"", "limits": []}, "expected a map"),
        ({"type": "kill", "session": True}, "expected an integer"),
        ({"type": "symbols", "path": "/x", "what": "everything"}, "functions"),
    ],
)
def test_malformed_messages_are_remote_errors(doc, complaint):
    server = _greeted_server()
    server.receive_data(_frame(doc))
    with pytest.raises(RemoteProtocolError, match=complaint):
        server.next_event()
    assert server.state == _state.CLOSED


@pytest.mark.parametrize(
    ("records_field", "complaint"),
    [
        ([{"r": "bogus"}], "unknown output record"),
        ([{"r": "text", "text": 5}], "expected str"),
        ([{"r": "lost", "reason": "x", "count": True}], "expected int"),
        ([{"r": "hist", "rows": "zz", "total": 1}], "malformed hist"),
        ("notalist", "expected an array"),
    ],
)
def test_malformed_output_records_are_remote_errors(records_field, complaint):
    client = Connection(CLIENT)
    client.send(Hello())
    client.receive_data(_frame({"type": "hello", "version": 1, "server": "d"}))
    client.next_event()
    client.send(Run(program=b""))
    client.receive_data(_frame({"type": "output", "session": 1, "records": records_field}))
    with pytest.raises(RemoteProtocolError, match=complaint):
        client.next_event()


def test_unknown_fields_are_ignored_for_compatibility():
    server = _greeted_server()
    server.receive_data(_frame({"type": "status", "from_the_future": [1, 2]}))
    assert server.next_event() == Status()


def test_oversized_frame_is_refused_before_buffering():
    server = Connection(SERVER)
    server.receive_data(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(RemoteProtocolError, match="larger than the maximum"):
        server.next_event()


def test_a_large_program_fits():
    pair = ConnectionPair()
    big = bytes(16 * 1024 * 1024)
    pair.send(CLIENT, Run(program=big, argv=("big.kp",)))


def test_too_large_to_send_is_a_local_error():
    client = ConnectionPair().client
    with pytest.raises(LocalProtocolError, match="larger than the maximum"):
        client.send(Run(program=bytes(MAX_FRAME)))


def test_truncated_frame_at_end_of_stream():
    server = Connection(SERVER)
    data = Connection(CLIENT).send(Hello())
    server.receive_data(data[:-1])
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="stream ended inside a frame"):
        server.next_event()


def test_garbage_payload():
    server = Connection(SERVER)
    server.receive_data(struct.pack(">I", 3) + b"\xc1\xc1\xc1")
    with pytest.raises(RemoteProtocolError, match="not a msgpack document"):
        server.next_event()


def test_closed_connection_refuses_to_send_except_a_fatal_error_from_the_server():
    server = Connection(SERVER)
    server.receive_data(b"\xff\xff\xff\xff")
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    with pytest.raises(LocalProtocolError):
        server.send(Reply("status", None))
    assert server.send(ErrorMessage("bye", fatal=True))


def _drain(conn: Connection) -> None:
    for _ in range(1000):
        if conn.next_event() in (NEED_DATA, CLOSED_BY_PEER):
            return


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_fuzzed_bytes_only_ever_raise_protocol_errors(chunks, greet_first):
    server = _greeted_server() if greet_first else Connection(SERVER)
    try:
        for chunk in chunks:
            server.receive_data(chunk)
            _drain(server)
        server.receive_data(b"")
        _drain(server)
    except RemoteProtocolError:
        assert server.state == _state.CLOSED


_wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
_tags = st.sampled_from(sorted({spec.tag for spec in MESSAGE_TABLE}))


@settings(max_examples=300, deadline=None)
@given(
    _tags,
    st.dictionaries(
        st.sampled_from(
            [
                "session",
                "program",
                "argv",
                "versions",
                "records",
                "data",
                "limits",
                "glob",
                "path",
                "what",
                "of",
                "fatal",
                "x",
            ]
        ),
        _wire_values,
        max_size=5,
    ),
)
def test_fuzzed_well_framed_maps_only_ever_raise_protocol_errors(tag, fields):
    for conn in (_greeted_server(), ConnectionPair().client):
        conn.receive_data(_frame({"type": tag, **fields}))
        try:
            _drain(conn)
        except RemoteProtocolError:
            assert conn.state == _state.CLOSED
