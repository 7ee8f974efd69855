"""The client against a scripted fake daemon: what it sends, what it prints,
its exit status, Ctrl-C, the `-- cmd` workload, detach and the requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from fake_daemon import FakeDaemon, tiny_program

from ktapctl.cli import main
from protocol import messages as msg
from protocol import records
from protocol.bytecode.encoding import encode

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kpc(tmp_path):
    path = tmp_path / "t.kpc"
    path.write_bytes(encode(tiny_program()))
    return str(path)


@pytest.fixture
def sock(tmp_path):
    return str(tmp_path / "ktapd.sock")


def run_main(args, sock):
    return main(["--socket", sock, *args])


async def normal_session(peer):
    run = await peer.receive()
    assert isinstance(run, msg.Run)
    await peer.send(msg.Started(session=5, probes=2))
    await peer.send(
        msg.Output(
            session=5,
            records=(
                records.Text("hello\n"),
                records.Histogram(rows=(("read", 3), ("write", 1)), total=4),
            ),
        )
    )
    await peer.send(msg.Lost(session=5, reason="ring", count=7))
    await peer.send(msg.Ended(session=5, ok=True, reason="finished"))
    await peer.receive()


def test_run_sends_ktap_options_and_prints_records(sock, kpc, capsys):
    with FakeDaemon(sock, normal_session) as daemon:
        status = run_main(["-T", "-v", "-d", "-C", "1", "-p", "42", kpc, "10", "x y"], sock)
    out, err = capsys.readouterr()
    assert status == 0
    run = next(m for m in daemon.received if isinstance(m, msg.Run))
    assert run.argv == (kpc, "10", "x y")
    assert (run.trace_pid, run.trace_cpu, run.workload) == (42, 1, False)
    assert run.print_timestamp and run.verbose and run.dry_run and not run.quiet
    assert run.program == encode(tiny_program())
    assert out.startswith("Tracing... Hit Ctrl-C to end.\nhello\n")
    assert "                           read |" in out
    assert "lost 7 events (ring buffer overrun)" in err
    assert "lost" not in out


def test_quiet_suppresses_tracing_line(sock, kpc, capsys):
    with FakeDaemon(sock, normal_session) as daemon:
        assert run_main(["-q", kpc], sock) == 0
    out, _ = capsys.readouterr()
    assert "Tracing" not in out and out.startswith("hello\n")
    run = next(m for m in daemon.received if isinstance(m, msg.Run))
    assert run.quiet


def test_json_lines(sock, kpc, capsys):
    with FakeDaemon(sock, normal_session):
        assert run_main(["--json", kpc], sock) == 0
    out, _ = capsys.readouterr()
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["type"] for d in docs] == ["started", "text", "hist", "lost", "ended"]
    assert docs[2]["rows"][0] == {"key": "read", "count": 3}
    assert docs[-1] == {"type": "ended", "session": 5, "ok": True, "reason": "finished"}


def test_output_file_mode_0600(sock, kpc, tmp_path, capsys):
    target = tmp_path / "out.txt"
    with FakeDaemon(sock, normal_session):
        assert run_main(["-o", str(target), kpc], sock) == 0
    out, _ = capsys.readouterr()
    assert out == ""
    assert target.read_text().startswith("Tracing... Hit Ctrl-C to end.\nhello\n")
    assert target.stat().st_mode & 0o777 == 0o600


async def runtime_error(peer):
    await peer.receive()
    await peer.send(msg.Output(session=1, records=(records.Error("divide 0", "t.kp", 2),)))
    await peer.send(msg.Ended(session=1, ok=False, reason="error"))
    await peer.receive()


def test_runtime_error_exit_status(sock, kpc, capsys):
    with FakeDaemon(sock, runtime_error):
        assert run_main([kpc], sock) == 1
    out, err = capsys.readouterr()
    assert out == "error: divide 0 (t.kp:2)\n"
    assert err == ""


async def refuse(peer):
    await peer.receive()
    await peer.send(msg.ErrorMessage(message="probe refused: sched:*", of="run"))
    await peer.receive()


def test_refused_run(sock, kpc, capsys):
    with FakeDaemon(sock, refuse):
        assert run_main([kpc], sock) == 1
    _, err = capsys.readouterr()
    assert "ktapctl: probe refused: sched:*" in err


async def worker_died(peer):
    await peer.receive()
    await peer.send(msg.Ended(session=1, ok=False, reason="worker died: signal 9"))
    await peer.receive()


def test_worker_died_is_reported(sock, kpc, capsys):
    with FakeDaemon(sock, worker_died):
        assert run_main([kpc], sock) == 1
    assert "session ended: worker died: signal 9" in capsys.readouterr().err


async def detach_reply(peer):
    run = await peer.receive()
    assert run.detach
    await peer.send(msg.Detached(session=17))
    await peer.receive()


def test_submit_detach_prints_session_id(sock, kpc, capsys):
    with FakeDaemon(sock, detach_reply):
        assert run_main(["submit", "--detach", kpc], sock) == 0
    assert capsys.readouterr().out == "17\n"


def test_unreachable_named_socket_is_an_error(sock, kpc, capsys):
    assert run_main([kpc], sock) == 1
    assert "no ktapd socket at" in capsys.readouterr().err


async def replies(peer):
    while (request := await peer.receive()) is not None:
        if isinstance(request, msg.ListSessions):
            data = [
                {"session": 3, "owner": 0, "state": "running", "argv": ["a.kp", "1"]},
                {"session": 12, "owner": 1000, "state": "ended", "argv": ["(command line)"]},
            ]
            await peer.send(msg.Reply(of="list", data=data))
        elif isinstance(request, msg.Status):
            data = {"version": "0.5.0", "features": {"kprobes": False, "uprobes": True}}
            await peer.send(msg.Reply(of="status", data=data))
        elif isinstance(request, msg.ListEvents):
            await peer.send(msg.Reply(of="events", data=[f"glob={request.glob}", "sched:x"]))
        elif isinstance(request, msg.ListSymbols):
            names = {
                "functions": ["malloc", "free"],
                "markers": ["libc:setjmp"],
            }[request.what]
            if request.path == "/full/specs":
                names = [f"probe:/usr/lib/x.so:{name}" for name in names]
            await peer.send(msg.Reply(of="symbols", data=names))
        elif isinstance(request, msg.Kill):
            if request.session == 99:
                await peer.send(msg.ErrorMessage(message="no session 99", of="kill"))
            else:
                await peer.send(msg.Reply(of="kill", data={"session": request.session}))


def test_list_status_events_symbols_kill(sock, capsys):
    with FakeDaemon(sock, replies) as daemon:
        assert run_main(["list"], sock) == 0
        listing = capsys.readouterr().out.splitlines()
        assert listing[0].split() == ["session", "owner", "state", "argv"]
        assert listing[1].split() == ["3", "0", "running", "a.kp,1"]
        assert run_main(["status"], sock) == 0
        assert capsys.readouterr().out.splitlines() == [
            "version: 0.5.0",
            "features.kprobes: False",
            "features.uprobes: True",
        ]
        assert run_main(["-le", "sched:*"], sock) == 0
        assert capsys.readouterr().out == "glob=sched:*\nsched:x\n"
        assert run_main(["-le"], sock) == 0
        assert capsys.readouterr().out.startswith("glob=None\n")
        assert run_main(["-lf", "/bin/true"], sock) == 0
        assert capsys.readouterr().out == "probe:/bin/true:malloc\nprobe:/bin/true:free\n"
        assert run_main(["-lm", "libc.so"], sock) == 0
        assert capsys.readouterr().out == "sdt:libc.so:setjmp\n"
        assert run_main(["-lf", "/full/specs"], sock) == 0
        assert capsys.readouterr().out == "probe:/usr/lib/x.so:malloc\nprobe:/usr/lib/x.so:free\n"
        assert run_main(["kill", "4"], sock) == 0
        assert run_main(["kill", "99"], sock) == 1
        assert "no session 99" in capsys.readouterr().err
        assert run_main(["--json", "status"], sock) == 0
        assert json.loads(capsys.readouterr().out)["features"]["uprobes"] is True
    symbols = [m for m in daemon.received if isinstance(m, msg.ListSymbols)]
    assert symbols[1].path == os.path.abspath("libc.so") and symbols[1].what == "markers"


# --- in a subprocess: signals and the workload ---------------------------------------


def ktapctl(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "ktapctl.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


async def until_exit(peer):
    await peer.receive()  # run
    await peer.send(msg.Started(session=2, probes=1))
    await peer.send(msg.Output(session=2, records=(records.Text("tick\n"),)))
    request = await peer.receive()
    assert isinstance(request, msg.Exit), request
    await peer.send(msg.Output(session=2, records=(records.Text("trace_end output\n"),)))
    await peer.send(msg.Ended(session=2, ok=True, reason="exit"))
    await peer.receive()


def wait_for_line(stream, text, timeout=10):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = stream.readline()
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not seen in {seen}")


def test_ctrl_c_sends_exit_and_waits_for_trace_end(sock, kpc):
    with FakeDaemon(sock, until_exit) as daemon:
        proc = ktapctl("--socket", sock, kpc)
        wait_for_line(proc.stdout, "tick")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out == "trace_end output\n"
    assert any(isinstance(m, msg.Exit) for m in daemon.received)


async def never_ends(peer):
    await peer.receive()
    await peer.send(msg.Started(session=2, probes=1))
    while await peer.receive() is not None:
        pass


def test_second_ctrl_c_stops_at_once(sock, kpc):
    with FakeDaemon(sock, never_ends):
        proc = ktapctl("--socket", sock, kpc)
        wait_for_line(proc.stdout, "Tracing")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    assert proc.returncode == 130


def test_attach_ctrl_c_detaches(sock):
    async def attached(peer):
        request = await peer.receive()
        assert request == msg.Attach(session=9)
        await peer.send(msg.Reply(of="attach", data={"session": 9, "state": "running"}))
        await peer.send(msg.Output(session=9, records=(records.Text("buffered\n"),)))
        request = await peer.receive()
        assert isinstance(request, msg.Detach), request
        await peer.send(msg.Detached(session=9))
        await peer.receive()

    with FakeDaemon(sock, attached) as daemon:
        proc = ktapctl("--socket", sock, "attach", "9")
        wait_for_line(proc.stdout, "buffered")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert not daemon.errors


def test_workload_is_held_until_started_then_reaped(sock, kpc, tmp_path):
    marker = tmp_path / "ran"
    facts = {}

    async def workload_session(peer):
        run = await peer.receive()
        facts["run"] = run
        await trio.sleep(0.3)
        facts["ran_before_started"] = marker.exists()
        facts["alive_before_started"] = os.path.exists(f"/proc/{run.trace_pid}")
        await peer.send(msg.Started(session=4, probes=1))
        deadline = trio.current_time() + 10
        while not marker.exists() and trio.current_time() < deadline:
            await trio.sleep(0.02)
        # The client reaps its child promptly: the pid disappears.
        while os.path.exists(f"/proc/{run.trace_pid}") and trio.current_time() < deadline:
            await trio.sleep(0.02)
        facts["reaped"] = not os.path.exists(f"/proc/{run.trace_pid}")
        await peer.send(msg.Ended(session=4, ok=True, reason="process exited"))
        await peer.receive()

    with FakeDaemon(sock, workload_session):
        proc = ktapctl("-q", "--socket", sock, kpc, "--", "sh", "-c", f"echo hi > {marker}")
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    run = facts["run"]
    assert run.workload and run.trace_pid > 0
    assert facts["alive_before_started"] and not facts["ran_before_started"]
    assert marker.read_text() == "hi\n"
    assert facts["reaped"]


def test_workload_not_started_when_run_is_refused(sock, kpc, tmp_path):
    marker = tmp_path / "ran"
    with FakeDaemon(sock, refuse):
        proc = ktapctl("--socket", sock, kpc, "--", "sh", "-c", f"echo hi > {marker}")
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "probe refused" in err
    assert not marker.exists()


def test_workload_outliving_session_is_terminated(sock, kpc):
    async def ends_early(peer):
        run = await peer.receive()
        await peer.send(msg.Started(session=4, probes=1))
        await trio.sleep(0.2)
        await peer.send(msg.Ended(session=4, ok=True, reason="finished"))
        await peer.receive()
        ends_early.pid = run.trace_pid

    with FakeDaemon(sock, ends_early):
        start = time.monotonic()
        proc = ktapctl("-q", "--socket", sock, kpc, "--", "sleep", "60")
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert time.monotonic() - start < 10
    assert not os.path.exists(f"/proc/{ends_early.pid}")


async def chatty(peer):
    await peer.receive()
    await peer.send(msg.Started(session=3, probes=1))
    for _ in range(2000):
        await peer.send(msg.Output(session=3, records=(records.Text("line\n" * 50),)))
    await peer.send(msg.Ended(session=3, ok=True, reason="finished"))
    await peer.receive()


def test_reader_leaving_is_not_an_error(sock, kpc):
    with FakeDaemon(sock, chatty):
        ktap = ktapctl("--socket", sock, kpc)
        head = subprocess.run(["head", "-1"], stdin=ktap.stdout, capture_output=True, text=True)
        ktap.stdout.close()
        _, err = ktap.communicate(timeout=20)
    assert head.stdout == "Tracing... Hit Ctrl-C to end.\n"
    assert ktap.returncode == 0, err
    assert "Traceback" not in err


# --- when to start an embedded daemon -------------------------------------------------


def test_may_embed():
    from ktapctl.client import may_embed
    from protocol.bytecode.program import Probe

    plain = tiny_program()
    ending = tiny_program((Probe("trace_end"),))
    tracing = tiny_program((Probe("trace", events=("sched:*",)),))
    ticking = tiny_program((Probe("tick", period_ns=10**9),))
    assert may_embed(plain, 1000) and may_embed(ending, 1000)
    assert not may_embed(tracing, 1000) and not may_embed(ticking, 1000)
    assert may_embed(tracing, 0)


@pytest.fixture
def no_default_daemon(tmp_path, monkeypatch):
    import ktapctl.cli

    monkeypatch.setattr(ktapctl.cli, "DEFAULT_SOCKET", str(tmp_path / "absent.sock"))
    monkeypatch.delenv("KTAP_SOCKET", raising=False)
    calls = []

    def fake_embedded(body, verbose=False):
        calls.append(body)
        return 42

    import ktapctl.client

    monkeypatch.setattr(ktapctl.client, "_embedded_daemon", fake_embedded)
    return calls


def test_falls_back_to_embedded_only_from_the_default_socket(no_default_daemon, kpc, sock, capsys):
    from ktapctl.cli import parse
    from ktapctl.client import run_program

    # Default socket absent, program allowed: the embedded daemon runs it.
    assert run_program(tiny_program(), parse([kpc])) == 42
    assert len(no_default_daemon) == 1
    # A socket the user named never falls back.
    assert run_program(tiny_program(), parse(["--socket", sock, kpc])) == 1
    assert "no ktapd socket at" in capsys.readouterr().err
    assert len(no_default_daemon) == 1


def test_no_fallback_for_a_tracing_script_of_an_ordinary_user(
    no_default_daemon, kpc, monkeypatch, capsys
):
    from ktapctl.cli import parse
    from ktapctl.client import run_program
    from protocol.bytecode.program import Probe

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    tracing = tiny_program((Probe("trace", events=("sched:*",)),))
    assert run_program(tracing, parse([kpc])) == 1
    assert "is the ktapd service running?" in capsys.readouterr().err
    assert no_default_daemon == []
    assert run_program(tiny_program(), parse([kpc])) == 42


def test_explicit_embedded_flag(no_default_daemon, kpc):
    from ktapctl.cli import parse
    from ktapctl.client import run_program

    assert run_program(tiny_program(), parse(["--embedded", kpc])) == 42


def test_sigterm_stops_like_ctrl_c(sock, kpc):
    with FakeDaemon(sock, until_exit) as daemon:
        proc = ktapctl("--socket", sock, kpc)
        wait_for_line(proc.stdout, "tick")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out == "trace_end output\n"
    assert any(isinstance(m, msg.Exit) for m in daemon.received)


def test_stale_socket_file_means_no_daemon(sock, kpc, capsys):
    import socket as socket_module

    stale = socket_module.socket(socket_module.AF_UNIX)
    stale.bind(sock)  # bound, never listening: what a crashed daemon leaves
    try:
        assert run_main([kpc], sock) == 1
    finally:
        stale.close()
    assert "ktapd is not running (nothing listens at" in capsys.readouterr().err


def test_protocol_violation_by_the_daemon_is_reported(sock, kpc, capsys):
    async def rude(peer):
        await peer.receive()
        await peer.stream.send_all(b"\x00\x00\x00\x03abc")  # a frame that is not msgpack
        await peer.receive()

    with FakeDaemon(sock, rude):
        assert run_main([kpc], sock) == 1
    assert "protocol error talking to ktapd" in capsys.readouterr().err


def test_daemon_vanishing_mid_session(sock, kpc, capsys):
    async def vanish(peer):
        await peer.receive()
        await peer.send(msg.Started(session=1, probes=1))
        await peer.send(msg.Output(session=1, records=(records.Text("partial\n"),)))

    with FakeDaemon(sock, vanish):
        assert run_main(["-q", kpc], sock) == 1
    out, err = capsys.readouterr()
    assert out == "partial\n"
    assert "ktapd closed the connection" in err


def test_lost_meter_coalesces_and_loses_no_count():
    from ktapctl.client import LostMeter, Sink

    class Out:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    now = [0.0]
    err = Out()
    meter = LostMeter(Sink(Out(), False, err), interval=1.0, clock=lambda: now[0])
    for _ in range(5):
        meter.add("ring", 10)
    meter.add("output", 3)
    assert (
        err.text
        == "lost 10 events (ring buffer overrun)\nlost 3 output records (client too slow)\n"
    )
    now[0] = 1.5
    meter.add("ring", 1)
    assert err.text.endswith("lost 41 events (ring buffer overrun)\n")
    meter.add("ring", 2)
    meter.flush()
    assert err.text.endswith(
        "lost 41 events (ring buffer overrun)\nlost 2 events (ring buffer overrun)\n"
    )
    meter.flush()
    assert err.text.count("\n") == 4


async def lost_storm(peer):
    await peer.receive()
    await peer.send(msg.Started(session=5, probes=1))
    for _ in range(100):
        await peer.send(msg.Lost(session=5, reason="ring", count=3))
    await peer.send(msg.Ended(session=5, ok=True, reason="finished"))
    await peer.receive()


def test_lost_storm_is_summed_not_spammed(sock, kpc, capsys):
    with FakeDaemon(sock, lost_storm):
        assert run_main(["-q", kpc], sock) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) <= 3
    assert sum(int(line.split()[1]) for line in lines) == 300


def test_a_session_needs_no_event_loop_library(sock, kpc):
    """Start-up time: a whole session (compile, run, relay, workload) runs
    without importing trio, and the program exits through main()'s fast
    path with its output flushed."""
    code = (
        "import sys\n"
        "from ktapctl import cli\n"
        "status = cli._main(sys.argv[1:])\n"
        "assert 'trio' not in sys.modules, 'trio was imported'\n"
        "sys.argv[1:] = ['-V']\n"
        "cli.main()\n"
    )
    script = ["-e", 'trace syscalls:sys_enter_getppid { print("x") }']
    with FakeDaemon(sock, normal_session):
        proc = subprocess.run(
            [sys.executable, "-c", code, "--socket", sock, *script, "--", "true"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Tracing... Hit Ctrl-C to end.\nhello\n")
    assert proc.stdout.endswith("(ktap language 0.4, protocol 1)\n")  # -V, flushed by main()
