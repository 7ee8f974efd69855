"""docs/protocol.md against the tables it describes, so the two cannot drift apart."""

from __future__ import annotations

import dataclasses
import pathlib
import re

from protocol import _state, records
from protocol.framing import MAX_FRAME
from protocol.messages import MESSAGE_TABLE, PROTOCOL_VERSIONS

DOC = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def _section(title: str) -> str:
    start = DOC.index(title)
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else None]


def test_every_message_and_field_is_documented_in_its_direction():
    sections = {
        _state.CLIENT: _section("## Messages: client to daemon"),
        _state.SERVER: _section("## Messages: daemon to client"),
    }
    for spec in MESSAGE_TABLE:
        text = sections[spec.sender]
        assert f"| `{spec.tag}` |" in text, f"{spec.sender} message {spec.tag} is not documented"
        for name, _kind in spec.fields:
            assert f"`{name}`" in text, f"{spec.tag}.{name} is not documented"


def test_every_record_type_and_field_is_documented():
    text = _section("## Output records")
    for tag, cls in records.RECORD_TYPES.items():
        assert f"| `{tag}` |" in text, tag
        for field in dataclasses.fields(cls):
            assert f"`{field.name}`" in text, f"{tag}.{field.name}"


def test_states_and_limits_match():
    states = _section("## States")
    for state in (
        _state.NEW,
        _state.GREETING,
        _state.IDLE,
        _state.ATTACHED,
        _state.LEAVING,
        _state.CLOSED,
    ):
        assert state in states
    sizes = re.findall(r"\(([\d,]+) bytes\)", _section("## Framing"))
    assert [int(s.replace(",", "")) for s in sizes] == [MAX_FRAME]
    assert f"version {max(PROTOCOL_VERSIONS)}" in _section("## Versioning")
