"""docs/bytecode.md is generated from the opcode/builtin tables and must be current."""

from ktapd.vm import gendoc
from protocol.bytecode import opcodes


def test_committed_document_is_up_to_date():
    assert gendoc.DOC_PATH.read_text() == gendoc.render(), \
        "docs/bytecode.md is stale: run python -m ktapd.vm.gendoc --write"


def test_every_opcode_is_documented():
    text = gendoc.render()
    for row in opcodes.OPCODES:
        assert f"| {row.number} | `{row.name}` |" in text
