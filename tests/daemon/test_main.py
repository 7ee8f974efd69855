"""``python -m ktapd`` as a process: socket activation, readiness, SIGTERM, bad configuration."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import trio
from daemon_helpers import RawClient, run_message, text_of

from protocol.messages import Ended

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def workdir():
    directory = tempfile.mkdtemp(prefix="ktapd-main-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_socket_activation_and_readiness(workdir):
    path = os.path.join(workdir, "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    notify_path = os.path.join(workdir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(20)

    env = dict(os.environ, LISTEN_FDS="1", NOTIFY_SOCKET=notify_path)
    # As systemd does it: the socket as fd 3, LISTEN_PID the daemon's own
    # pid (a small launcher moves the fd, sets the pid, then execs ktapd).
    fd = listener.fileno()
    launcher = (
        f"import os, sys; os.dup2({fd}, 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
        "os.execv(sys.executable, [sys.executable, '-m', 'ktapd', '--socket', '/nonexistent/ignored.sock'])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher],
        cwd=ROOT,
        env=env,
        pass_fds=(fd,),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        try:
            assert notify.recv(100) == b"READY=1"
        except TimeoutError:
            proc.kill()
            pytest.fail(f"no READY=1 from ktapd: {proc.communicate()[1]}")

        async def session() -> str:
            c = await RawClient.connect(path)
            await c.send(run_message('print("activated")'))
            return text_of(await c.until(Ended))

        assert trio.run(session) == "activated\n"
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(100) == b"STOPPING=1"
        assert proc.wait(15) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
        notify.close()
    assert not os.path.exists("/nonexistent/ignored.sock")


def test_bad_configuration_stops_at_start(workdir):
    config = os.path.join(workdir, "ktapd.toml")
    with open(config, "w") as f:
        f.write("no_such_key = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "ktapd", "--config", config, "--socket", os.path.join(workdir, "s")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown key 'no_such_key'" in result.stderr
    assert not os.path.exists(os.path.join(workdir, "s"))


def test_sigterm_exits_zero_and_removes_its_socket(workdir):
    path = os.path.join(workdir, "own.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ktapd", "--socket", path], cwd=ROOT, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(path):
            assert time.monotonic() < deadline, "ktapd did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not os.path.exists(path)
