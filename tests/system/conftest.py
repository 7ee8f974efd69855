"""Fixtures shared by the real-kernel system tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kernel_support import kernel_unavailable_reason, require_kernel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A real ktapd on a private socket for one test module; yields the socket path."""
    reason = kernel_unavailable_reason()
    if reason:
        require_kernel(reason)
    if not (ROOT / "ktapd" / "__main__.py").exists():
        require_kernel("ktapd is not in this checkout yet")
    sock = tmp_path_factory.mktemp("ktapd") / "ktapd.sock"
    log_path = sock.parent / "ktapd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ktapd", "--socket", str(sock)], cwd=ROOT, stdout=log, stderr=log
        )
    deadline = time.monotonic() + 20
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"ktapd did not start:\n{log_path.read_text()}")
        time.sleep(0.02)
    yield str(sock)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
