"""The per-user cache of compiled scripts (ktapctl/program_cache.py): hits
skip the compiler, and anything that could make a hit wrong is a miss."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ktapctl import program_cache
from ktapctl.lang import compile_source

ROOT = Path(__file__).resolve().parents[2]
SOURCE = 'trace syscalls:sys_enter_getppid { print("hit", arg[1]) }'
NAME = "(command line)"


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(program_cache.DISABLE_ENV, raising=False)
    return tmp_path / "ktap" / "programs"


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + program_cache.SUFFIX)) if directory.exists() else []


def test_a_stored_program_comes_back_for_the_same_source_and_name(cache_home):
    program = compile_source(SOURCE, NAME)
    assert program_cache.load(SOURCE, NAME) is None
    program_cache.store(SOURCE, NAME, program)
    assert program_cache.load(SOURCE, NAME) == program
    assert program_cache.load(SOURCE + " ", NAME) is None
    assert program_cache.load(SOURCE, "other.kp") is None
    (entry,) = entries(cache_home)
    assert entry.stat().st_mode & 0o077 == 0


def test_a_changed_compiler_misses(cache_home, tmp_path, monkeypatch):
    compiler_file = tmp_path / "codegen.py"
    compiler_file.write_text("v1")
    monkeypatch.setattr(program_cache, "COMPILER_PATHS", (str(compiler_file),))
    program_cache.store(SOURCE, NAME, compile_source(SOURCE, NAME))
    assert program_cache.load(SOURCE, NAME) is not None
    compiler_file.write_text("v2 ")
    assert program_cache.load(SOURCE, NAME) is None


def test_a_cache_others_can_write_is_not_used(cache_home):
    program = compile_source(SOURCE, NAME)
    program_cache.store(SOURCE, NAME, program)
    os.chmod(cache_home, 0o777)
    assert program_cache.load(SOURCE, NAME) is None
    program_cache.store("print(2)", NAME, compile_source("print(2)", NAME))
    assert len(entries(cache_home)) == 1
    os.chmod(cache_home, 0o700)
    (entry,) = entries(cache_home)
    os.chmod(entry, 0o666)
    assert program_cache.load(SOURCE, NAME) is None


def test_a_damaged_entry_is_a_miss(cache_home):
    program_cache.store(SOURCE, NAME, compile_source(SOURCE, NAME))
    (entry,) = entries(cache_home)
    entry.write_bytes(entry.read_bytes()[:20])
    assert program_cache.load(SOURCE, NAME) is None


def test_turned_off(cache_home, monkeypatch):
    monkeypatch.setenv(program_cache.DISABLE_ENV, "0")
    program_cache.store(SOURCE, NAME, compile_source(SOURCE, NAME))
    assert entries(cache_home) == []


def test_the_cache_stays_bounded(cache_home, monkeypatch):
    monkeypatch.setattr(program_cache, "MAX_ENTRIES", 4)
    for n in range(6):
        source = f"print({n})"
        program_cache.store(source, NAME, compile_source(source, NAME))
    assert 2 <= len(entries(cache_home)) <= 4
    assert program_cache.load("print(5)", NAME) is not None  # the newest stays


def run_cli(args, env):
    code = (
        "import sys\n"
        "from ktapctl import cli\n"
        "status = cli._main(sys.argv[1:])\n"
        "sys.stdout.flush()\n"
        "print('COMPILER', 'ktapctl.lang.parser' in sys.modules)\n"
        "sys.exit(status)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )


def test_ktapctl_runs_a_cached_script_without_the_compiler(cache_home):
    env = dict(os.environ)
    first = run_cli(["-b", "-e", SOURCE], env)
    second = run_cli(["-b", "-e", SOURCE], env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.endswith("COMPILER True\n")
    assert second.stdout.endswith("COMPILER False\n")
    assert first.stdout.replace("True", "") == second.stdout.replace("False", "")


def test_compile_errors_are_never_cached(cache_home):
    env = dict(os.environ)
    for _ in range(2):
        result = run_cli(["-b", "-e", "print(1"], env)
        assert result.returncode == 3
        assert "expected" in result.stderr
    assert entries(cache_home) == []
