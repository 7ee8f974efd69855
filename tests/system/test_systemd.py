"""The systemd units: they verify, their sysusers/tmpfiles snippets apply,
and ktapd answers through a socket passed the systemd way.

The units name the installed /usr/bin/ktapd; the tests put this checkout's
venv ktapd in its place, so they check the units and not the install.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
VENV_KTAPD = ROOT / ".venv" / "bin" / "ktapd"


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def test_units_verify(tmp_path):
    need("systemd-analyze")
    service = (UNITS / "ktapd.service").read_text()
    assert "ExecStart=/usr/bin/ktapd\n" in service
    (tmp_path / "ktapd.service").write_text(
        service.replace("ExecStart=/usr/bin/ktapd", f"ExecStart={VENV_KTAPD}")
    )
    shutil.copy(UNITS / "ktapd.socket", tmp_path / "ktapd.socket")
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "ktapd.socket"),
            str(tmp_path / "ktapd.service"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    # verify reports problems it tolerates as warnings naming the unit file.
    complaints = [line for line in result.stderr.splitlines() if "ktapd." in line]
    assert not complaints, "\n".join(complaints)


def test_service_keeps_a_justified_capability_set():
    text = (UNITS / "ktapd.service").read_text()
    line = next(x for x in text.splitlines() if x.startswith("CapabilityBoundingSet="))
    caps = line.split("=", 1)[1].split()
    assert "CAP_PERFMON" in caps and "CAP_SYS_ADMIN" in caps
    for cap in caps:  # every capability has its reason in a comment
        assert f"#   {cap} " in text, f"{cap} has no comment saying why"
    assert "Type=notify" in text


def test_socket_unit_path_matches_the_client_default():
    from ktapctl.cli import DEFAULT_SOCKET

    text = (UNITS / "ktapd.socket").read_text()
    assert f"ListenStream={DEFAULT_SOCKET}\n" in text
    assert "SocketMode=0660" in text and "SocketGroup=ktap" in text


def test_sysusers_and_tmpfiles_apply_to_an_empty_root(tmp_path):
    need("systemd-sysusers")
    need("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(UNITS / "ktapd.sysusers.conf")],
        check=True,
        capture_output=True,
    )
    passwd = (root / "etc" / "passwd").read_text()
    group = (root / "etc" / "group").read_text()
    assert any(
        line.startswith("ktapd-worker:") and "nologin" in line for line in passwd.splitlines()
    )
    assert any(line.startswith("ktap:") for line in group.splitlines())
    subprocess.run(
        ["systemd-tmpfiles", "--create", f"--root={root}", str(UNITS / "ktapd.tmpfiles.conf")],
        check=True,
        capture_output=True,
    )
    assert (root / "run" / "ktapd").is_dir()
    assert (root / "run" / "ktapd").stat().st_mode & 0o777 == 0o755


def test_socket_activation_serves_a_client(tmp_path):
    need("systemd-socket-activate")
    if not (ROOT / "ktapd" / "__main__.py").exists():
        pytest.skip("ktapd (the daemon) is not in this checkout yet")
    sock = tmp_path / "ktapd.sock"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    daemon = subprocess.Popen(
        ["systemd-socket-activate", "-l", str(sock), str(VENV_KTAPD)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        # The socket exists before ktapd starts: systemd-socket-activate
        # listens, and starts ktapd on the first connection.
        result = subprocess.run(
            [sys.executable, "-m", "ktapctl.cli", "--socket", str(sock), "status"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert "version:" in result.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            _, err = daemon.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            raise
    assert daemon.returncode == 0, err.decode(errors="replace")
