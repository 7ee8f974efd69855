"""encode/decode of the bytecode container: round trips and the bounded, total decoder."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.bytecode import DecodeError, Function, Probe, Program, Upvalue, decode, encode
from protocol.bytecode import opcodes as op
from protocol.bytecode.disasm import disassemble

SAMPLE = Program(
    functions=(
        Function(
            name="main",
            nparams=1,
            nregs=3,
            boxed=(2,),
            upvalues=(),
            constants=(None, True, -(1 << 63), "héllo\x00\xff"),
            code=((op.NEWBOX, 2), (op.CLOSURE, 1, 1), (op.REGISTER, 0, 1), (op.RETURN0,)),
            lines=(1, 2, 2, 3),
        ),
        Function(
            name="<trace>",
            nparams=0,
            nregs=1,
            boxed=(),
            upvalues=(Upvalue(0, 2, "t"),),
            constants=(),
            code=((op.GETUPVAL, 0, 0), (op.RETURN0,)),
            lines=(2, 2),
            line=2,
        ),
    ),
    probes=(
        Probe("trace", ("syscalls:sys_enter_*",), "fd == 3", 0, 2),
        Probe("tick", (), None, 10**9, 5),
    ),
    source_name="x.kp",
)


def test_round_trip():
    assert decode(encode(SAMPLE)) == SAMPLE


def test_disassembly_names_everything():
    text = disassemble(SAMPLE)
    assert "REGISTER  probe0 r1" in text
    assert "upvalue u0 t <- box r2" in text
    assert "probe 0: trace syscalls:sys_enter_* /fd == 3/" in text


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(magic="nope"), "bad magic"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(functions=[]), "main chunk is missing"),
        (lambda d: d["functions"][0][5].append(1 << 63), "does not fit in 64 bits"),
        (lambda d: d["functions"][0][5].append(b"raw"), "constant of type bytes"),
        (lambda d: d["functions"][0][7].pop(), "line table has 3 entries for 4"),
        (lambda d: d["probes"][0].__setitem__(0, "bogus"), "unknown probe kind"),
        (lambda d: d["functions"][0].__setitem__(2, -1), "nregs: -1 is outside"),
    ],
)
def test_decode_rejects_with_a_message(mutate, message):
    doc = msgpack.unpackb(encode(SAMPLE), raw=False)
    mutate(doc)
    with pytest.raises(DecodeError, match=message):
        decode(msgpack.packb(doc, use_bin_type=True))


def test_oversized_input_is_refused_before_parsing():
    with pytest.raises(DecodeError, match="more than"):
        decode(b"\x00" * (16 * 1024 * 1024 + 1))


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_decode_is_total_on_garbage(data):
    try:
        decode(data)
    except DecodeError:
        pass


@settings(max_examples=1000, deadline=None)
@given(st.integers(0, 400), st.integers(0, 255))
def test_decode_is_total_on_flipped_bytes(position, value):
    data = bytearray(encode(SAMPLE))
    data[position % len(data)] = value
    try:
        decode(bytes(data))
    except DecodeError:
        pass
