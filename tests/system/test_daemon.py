"""ktapd end to end on the real kernel: a daemon subprocess, raw protocol clients.

Root only (kernel tests): they open tracepoints and uprobes for real.
Each test starts ``python -m ktapd`` on a socket in a temporary directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from ktapctl.lang import compile_source
from protocol import records
from protocol.bytecode.encoding import encode
from protocol.connection import CLIENT, CLOSED_BY_PEER, NEED_DATA, Connection
from protocol.messages import (
    Ended,
    ErrorMessage,
    Exit,
    Hello,
    ListEvents,
    ListSymbols,
    Lost,
    Output,
    Reply,
    Run,
    ServerHello,
    Started,
    Status,
)

pytestmark = pytest.mark.kernel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


@pytest.fixture
def ktapd(kernel):
    directory = tempfile.mkdtemp(prefix="ktapd-sys-")
    path = os.path.join(directory, "d.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ktapd", "--socket", path, "--verbose"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"ktapd did not start: {proc.communicate()[1]}")
        time.sleep(0.05)
    proc.socket_path = path
    yield proc
    if proc.poll() is None:
        proc.kill()
    log = proc.communicate()[1]
    print(log)  # shown when the test failed


@pytest.fixture
def stale_probe(kernel):
    """What a crashed ktapd leaves behind: a uprobe in a ktapd_ group."""
    from ktapd.probes import tracefs, uprobe

    tracefs.ensure_mounted()
    real = os.path.realpath(LIBC)
    uprobe.define("ktapd_99999", "stale", real, uprobe.elf_functions(real)["getppid"], False)
    yield
    if ("ktapd_99999", "stale") in uprobe.list_defined("ktapd_99999"):
        uprobe.remove("ktapd_99999", "stale")


class Client:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.conn = Connection(CLIENT)
        self.send(Hello(versions=(1,), client="system-test"))
        assert isinstance(self.receive(), ServerHello)

    def send(self, message) -> None:
        self.sock.sendall(self.conn.send(message))

    def receive(self):
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(65536))

    def until(self, kind) -> list:
        got = []
        while True:
            message = self.receive()
            got.append(message)
            if isinstance(message, kind) or message is CLOSED_BY_PEER:
                return got


def run(source: str, **options) -> Run:
    return Run(program=encode(compile_source(source, "test.kp")), argv=("test.kp",), **options)


def text(messages: list) -> str:
    return "".join(
        r.text for m in messages if isinstance(m, Output) for r in m.records if hasattr(r, "text")
    )


def ktapd_leftovers(pid: int) -> tuple[list[str], int]:
    """Our dynamic events in tracefs, and the perf fds the daemon holds."""
    with open("/sys/kernel/tracing/uprobe_events") as f:
        dynamic = [line for line in f if "ktapd_" in line]
    perf = sum(
        1
        for fd in os.listdir(f"/proc/{pid}/fd")
        if "perf_event" in _readlink(f"/proc/{pid}/fd/{fd}")
    )
    return dynamic, perf


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


COUNT_GETPPID = "var n = 0 trace syscalls:sys_enter_getppid { n += 1 } trace_end { print(n) }"


def test_counts_getppid_of_a_started_process_until_it_exits(ktapd):
    # The workload waits on stdin until the probes are on, as ktapctl's -- cmd does.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; sys.stdin.read(1); [os.getppid() for _ in range(1234)]",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        c = Client(ktapd.socket_path)
        c.send(run(COUNT_GETPPID, trace_pid=child.pid, workload=True))
        started = c.until(Started)[-1]
        assert started.probes == 1
        child.stdin.write(b"x")
        child.stdin.close()
        got = c.until(Ended)
    finally:
        child.wait(10)
    assert text(got) == "1234\n"
    assert got[-1].ok and got[-1].reason == "process exited"


def test_exit_runs_trace_end_and_removes_probes(ktapd):
    c = Client(ktapd.socket_path)
    c.send(
        run(
            f'var n = 0 trace probe:{LIBC}:getppid {{ n += 1 }} trace_end {{ print("calls", n > 0) }}'
        )
    )
    c.until(Started)
    dynamic, perf = ktapd_leftovers(ktapd.pid)
    assert dynamic and perf
    for _ in range(20):
        os.getppid()
    c.send(Exit())
    got = c.until(Ended)
    assert text(got) == "calls\ttrue\n"
    assert got[-1].ok and got[-1].reason == "exit"
    time.sleep(0.2)
    assert ktapd_leftovers(ktapd.pid) == ([], 0)


def test_client_vanishing_mid_stream_leaves_nothing_behind(ktapd):
    c = Client(ktapd.socket_path)
    c.send(
        run(
            f"trace probe:{LIBC}:getppid {{ print(pid) }} trace syscalls:sys_enter_getppid {{ print(tid) }}"
        )
    )
    c.until(Started)
    for _ in range(50):
        os.getppid()
    c.receive()  # output is flowing
    c.sock.close()
    deadline = time.monotonic() + 10
    while ktapd_leftovers(ktapd.pid) != ([], 0):
        assert time.monotonic() < deadline, ktapd_leftovers(ktapd.pid)
        time.sleep(0.05)
    # The daemon keeps serving.
    other = Client(ktapd.socket_path)
    other.send(Status())
    assert other.receive().data["sessions"] == 0


def test_sigterm_stops_sessions_with_trace_end_and_exits_zero(ktapd):
    c = Client(ktapd.socket_path)
    c.send(run(COUNT_GETPPID.replace("print(n)", 'print("final", n > 0)')))
    c.until(Started)
    for _ in range(10):
        os.getppid()
    ktapd.send_signal(signal.SIGTERM)
    got = c.until(Ended)
    assert text(got) == "final\ttrue\n"
    assert got[-1].ok and got[-1].reason == "daemon stopping"
    assert ktapd.wait(10) == 0
    with open("/sys/kernel/tracing/uprobe_events") as f:
        assert "ktapd_" not in f.read()


def test_refused_probes_come_back_as_errors_after_main_output(ktapd):
    c = Client(ktapd.socket_path)
    c.send(run('print("main ran") trace nosuch:event { }'))
    got = c.until(ErrorMessage)
    assert text(got) == "main ran\n"
    assert (
        got[-1].of == "run"
        and not got[-1].fatal
        and "no tracepoint matches 'nosuch:event'" in got[-1].message
    )
    # args.NAME is checked against the event formats when the probes open.
    c.send(run("trace syscalls:sys_enter_openat { print(args.filename, args.nosuch) }"))
    refusal = c.until(ErrorMessage)[-1]
    assert refusal.message == (
        "args.nosuch: no such field in syscalls:sys_enter_openat; "
        "fields: __syscall_nr, dfd, filename, flags, mode"
    )
    assert ktapd_leftovers(ktapd.pid) == ([], 0)


def test_verbose_names_the_opened_events(ktapd):
    c = Client(ktapd.socket_path)
    c.send(run("trace syscalls:sys_enter_getppid { } tick-50ms { exit() }", verbose=True))
    got = c.until(Ended)
    notices = [
        r.text
        for m in got
        if isinstance(m, Output)
        for r in m.records
        if isinstance(r, records.Notice)
    ]
    assert any("syscalls:sys_enter_getppid" in n and n.startswith("opened ") for n in notices), (
        notices
    )
    assert got[-1].ok and got[-1].reason == "finished"


def test_events_and_symbols_are_served(ktapd):
    c = Client(ktapd.socket_path)
    c.send(ListEvents("sched:sched_switch*"))
    assert c.receive() == Reply("events", ["sched:sched_switch"])
    c.send(ListSymbols(LIBC, "functions"))
    reply = c.receive()
    assert reply.of == "symbols" and "getppid" in reply.data
    c.send(ListSymbols("/nonexistent/binary", "functions"))
    refusal = c.receive()
    assert isinstance(refusal, ErrorMessage) and refusal.of == "symbols"


def test_user_string_reads_another_users_process_through_the_daemon(ktapd):
    # The worker runs as the worker user and may not read this root-owned
    # process; the daemon reads for it.  The child keeps the path alive.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time; sys.stdin.read(1); p = '/etc/hostname'; os.close(os.open(p, os.O_RDONLY)); "
            "time.sleep(0.5)",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        c = Client(ktapd.socket_path)
        c.send(
            run(
                'trace syscalls:sys_enter_openat { if (user_string(arg2) == "/etc/hostname") { print("seen") } }',
                trace_pid=child.pid,
                workload=True,
            )
        )
        c.until(Started)
        child.stdin.write(b"x")
        child.stdin.close()
        got = c.until(Ended)
    finally:
        child.wait(10)
    assert text(got) == "seen\n"
    assert got[-1].reason == "process exited"


def test_start_removes_dynamic_events_left_by_a_crashed_daemon(stale_probe, ktapd):
    # stale_probe defined ktapd_99999/stale before the daemon started.
    c = Client(ktapd.socket_path)  # ktapd is up, so its start-up cleanup ran
    c.send(Status())
    assert c.receive().of == "status"
    with open("/sys/kernel/tracing/uprobe_events") as f:
        assert "ktapd_99999" not in f.read()


def test_nothing_is_lost_silently(ktapd):
    """Events the ring could not hold are counted: seen + lost == produced.

    The workload makes getppid calls as fast as it can (far more than one
    Python consumer handles), so some usually are lost; the accounting must
    be exact either way, and the session's summary must agree."""
    calls = 1_000_000
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os, sys; sys.stdin.read(1); g = os.getppid\nfor _ in range({calls}): g()",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        c = Client(ktapd.socket_path)
        c.send(run(COUNT_GETPPID, trace_pid=child.pid, workload=True))
        c.until(Started)
        child.stdin.write(b"x")
        child.stdin.close()
        got = c.until(Ended)
    finally:
        child.wait(30)
    seen = int(text(got))
    streamed = sum(m.count for m in got if isinstance(m, Lost) and m.reason == "ring")
    summary = [
        r for m in got if isinstance(m, Output) for r in m.records if isinstance(r, records.Lost)
    ]
    assert seen + streamed == calls, (seen, streamed)
    assert summary == ([records.Lost("ring", streamed)] if streamed else [])
