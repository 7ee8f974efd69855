"""Language tests: every tests/lang/scripts/**/*.kp through compile -> VM.

Each script carries its expectations inline (see lang_harness.py).  A
script with ``# error:`` must fail with that text, at compile time or at
run time; otherwise it must compile, verify, and print exactly its
``# expect:`` lines.  Output checks need ktapd.vm; while it is missing they
skip (compilation is still checked by test_compile_all.py).
"""

from __future__ import annotations

import pytest
from lang_harness import SCRIPTS, read_spec, run, vm_available

SCRIPT_PATHS = sorted(SCRIPTS.rglob("*.kp"))


def test_there_are_scripts():
    assert len(SCRIPT_PATHS) >= 60


@pytest.mark.parametrize("path", SCRIPT_PATHS, ids=lambda p: str(p.relative_to(SCRIPTS)))
def test_script(path):
    spec = read_spec(path)
    assert spec.expect or spec.errors or spec.compile_only, "script states no expectation"
    outcome = run(spec)
    if outcome.compile_error is not None:
        assert spec.errors, f"unexpected compile error:\n{outcome.compile_error}"
        for text in spec.errors:
            assert text in outcome.compile_error
        return
    if spec.compile_only:
        assert not spec.expect, "compile-only scripts cannot expect output"
        return
    if not outcome.ran:
        pytest.skip("ktapd.vm is not available: only compilation was checked")
    output = "\n".join(outcome.output)
    if spec.errors:
        error_lines = [line for line in outcome.output if line.startswith("error:")]
        assert error_lines, f"expected a run-time error, got output:\n{output}"
        for text in spec.errors:
            assert any(text in line for line in error_lines), output
        normal = [line for line in outcome.output if not line.startswith("error:")]
        assert normal == spec.expect
    else:
        assert outcome.output == spec.expect


def test_vm_is_wired_up_when_present():
    """The harness must really run scripts once the VM exists."""
    if not vm_available():
        pytest.skip("ktapd.vm is not available yet")
    spec = read_spec(SCRIPTS / "builtins" / "print.kp")
    assert run(spec).ran
