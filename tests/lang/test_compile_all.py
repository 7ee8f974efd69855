"""Every script we have compiles (or fails with its stated error) and verifies.

Runs without the VM, so compilation of the whole language-test corpus and
of the project's samples/ stays checked even when ktapd.vm is broken.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lang_harness import SCRIPTS, read_spec

from ktapctl.lang import CompileError, compile_source
from ktapd.verifier import verify
from protocol.bytecode import decode, encode

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
ALL = sorted(SCRIPTS.rglob("*.kp")) + sorted(SAMPLES.rglob("*.kp"))


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_compiles_and_verifies(path):
    source = path.read_text()
    expected_errors = read_spec(path).errors if path.is_relative_to(SCRIPTS) else []
    try:
        program = compile_source(source, path.name)
    except CompileError as exc:
        assert expected_errors, exc.render()
        assert any(text in exc.render() for text in expected_errors)
        return
    verify(decode(encode(program)), admin=True)
