"""The grammar cache is a pickle: it is only used when nobody else can write it."""

from __future__ import annotations

import os

from ktapctl.lang import parser


def test_cache_in_a_private_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = parser._cache_file()
    assert path and path.startswith(str(tmp_path / "ktap"))
    assert os.stat(tmp_path / "ktap").st_mode & 0o777 == 0o700


def test_no_cache_in_a_world_writable_directory(tmp_path, monkeypatch):
    (tmp_path / "ktap").mkdir()
    os.chmod(tmp_path / "ktap", 0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert parser._cache_file() is False


def test_no_cache_when_the_file_is_writable_by_others(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = parser._cache_file()
    with open(path, "w") as f:
        f.write("not a pickle")
    os.chmod(path, 0o666)
    assert parser._cache_file() is False


def test_no_cache_through_a_symlink(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = parser._cache_file()
    os.symlink("/etc/hostname", path)
    assert parser._cache_file() is False


def test_no_cache_when_the_directory_cannot_be_made(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert parser._cache_file() is False


def test_a_corrupt_cache_is_ignored(tmp_path, monkeypatch):
    import lark

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = parser._cache_file()
    with open(path, "wb") as f:
        f.write(b"garbage\n")
    os.chmod(path, 0o600)
    fresh = lark.Lark(parser.GRAMMAR_PATH.read_text(), parser="lalr", lexer=parser.LarkLexer,
                      propagate_positions=True, maybe_placeholders=False, cache=path)
    assert fresh is not None
