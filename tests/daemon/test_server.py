"""The daemon in-process: sessions without probes, requests, bad clients, workers dying.

Every test runs a real Daemon on a Unix socket in a temporary directory,
talks to it through real protocol Connections, and every session runs in
a real worker process.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import tempfile

import pytest
import trio
from daemon_helpers import RawClient, records_of, run_message, text_of

from ktapd import server
from ktapd import session as session_mod
from ktapd.config import Config
from ktapd.server import Daemon, bind_socket
from protocol import records
from protocol.connection import CLOSED_BY_PEER
from protocol.messages import (
    Attach,
    Detach,
    Detached,
    Ended,
    ErrorMessage,
    Exit,
    Kill,
    ListSessions,
    Lost,
    Output,
    Reply,
    Run,
    Started,
    Status,
)

# Main chunks that run without any probe: one for minutes (tests end it),
# one for a second or two (about 8 million steps a second here).
LONG_MAIN = "var i = 0 while (i < 900000000) { i += 1 }"
LONG_LIMITS = {"main_steps": 1_000_000_000}
SHORT_MAIN = "var i = 0 while (i < 8000000) { i += 1 }"
SHORT_LIMITS = {"main_steps": 10_000_000}


async def test_probe_less_script_runs_main_then_trace_end(ktapd):
    c = await ktapd.client()
    await c.send(run_message('print("hello", 1 + 2) trace_end { print("end") }'))
    got = await c.until(Ended)
    assert text_of(got) == "hello\t3\nend\n"
    assert got[-1].ok and got[-1].reason == "finished"
    assert not any(isinstance(m, Started) for m in got)  # nothing was registered
    # The connection can run another script afterwards.
    await c.send(run_message("print(arg[0], arg[1])"))
    got = await c.until(Ended)
    assert text_of(got) == "test.kp\tnil\n" and got[-1].ok


async def next_spare(spawner):
    """The spare worker, once the background refill has started one."""
    with trio.fail_after(10):
        while spawner._spare is None:
            await trio.sleep(0.005)
    return spawner._spare


async def test_sessions_start_on_a_spare_worker(ktapd):
    # The daemon starts a spare with itself: the first session uses it.  (A
    # session is forgotten once its end reached the client, so the proof
    # that a spare ran it is that the spare exited 0: a worker that never
    # got "start" waits for it.)
    first = (await next_spare(ktapd.daemon.spawner))[0]
    if os.geteuid() == 0:  # a waiting spare only gets idle CPU
        assert os.getpriority(os.PRIO_PROCESS, first.pid) == session_mod.SPARE_NICE
    c = await ktapd.client()
    await c.send(run_message('print("one")'))
    assert text_of(await c.until(Ended)) == "one\n"
    with trio.fail_after(10):
        assert await first.wait() == 0
    # Taking it started the next one in the background.
    spare = (await next_spare(ktapd.daemon.spawner))[0]
    assert spare is not first and spare.returncode is None
    await c.send(run_message('print("two")'))
    assert text_of(await c.until(Ended)) == "two\n"
    with trio.fail_after(10):
        assert await spare.wait() == 0
    # A spare that died waiting is replaced, not handed to a session.
    dead = (await next_spare(ktapd.daemon.spawner))[0]
    dead.kill()
    await dead.wait()
    await c.send(run_message('print("three")'))
    assert text_of(await c.until(Ended)) == "three\n"
    assert all(s.worker_pid != dead.pid for s in ktapd.daemon.sessions.values())


async def test_script_arguments_reach_arg(ktapd):
    c = await ktapd.client()
    await c.send(
        Run(
            program=run_message("print(arg[0], arg[1] + 1, arg[2])").program,
            argv=("s.kp", "41", "x"),
        )
    )
    assert text_of(await c.until(Ended)) == "s.kp\t42\tx\n"


async def test_runtime_error_ends_the_session_without_trace_end(ktapd):
    c = await ktapd.client()
    await c.send(run_message('var z = 0 trace_end { print("end") } print(1 / z)'))
    got = await c.until(Ended)
    errors = [r for r in records_of(got) if isinstance(r, records.Error)]
    assert errors and "divide 0" in errors[0].message
    assert "end" not in text_of(got)
    assert got[-1] == Ended(got[-1].session, False, "error")


async def test_bad_bytecode_is_refused_and_the_connection_stays_usable(ktapd):
    c = await ktapd.client()
    await c.send(Run(program=b"\x93garbage", argv=("x",)))
    refusal = await c.receive()
    assert isinstance(refusal, ErrorMessage) and refusal.of == "run" and not refusal.fatal
    assert "bad bytecode" in refusal.message
    await c.send(run_message('print("still here")'))
    assert text_of(await c.until(Ended)) == "still here\n"


async def test_malformed_frames_close_only_that_connection(ktapd):
    good = await ktapd.client()
    await good.send(run_message(SHORT_MAIN + ' print("done")', limits=SHORT_LIMITS))
    for garbage in (
        struct.pack(">I", 3) + b"\xc1\xc1\xc1",  # not msgpack
        struct.pack(">I", 0xFFFFFFFF),  # oversized
        struct.pack(">I", 2) + b"\x81\xa4",  # truncated map, then the stream ends
    ):
        bad = await ktapd.client()
        await bad.send_raw(garbage)
        if garbage.endswith(b"\xa4"):
            await bad.stream.send_eof()
        reply = await bad.receive()
        assert isinstance(reply, ErrorMessage) and reply.fatal, reply
        assert await bad.receive() is CLOSED_BY_PEER
    # A client that says nothing at all and vanishes.
    silent = await ktapd.client(greet=False)
    await silent.aclose()
    # Other clients are served, and the good session runs to its end.
    status = await ktapd.client()
    await status.send(Status())
    assert isinstance(await status.receive(), Reply)
    got = await good.until(Ended)
    assert text_of(got) == "done\n" and got[-1] == Ended(got[-1].session, True, "finished")


async def test_a_killed_worker_ends_only_its_session(ktapd):
    victim = await ktapd.client()
    await victim.send(run_message(LONG_MAIN, limits=LONG_LIMITS))
    bystander = await ktapd.client()
    await bystander.send(run_message(SHORT_MAIN + ' print("survived")', limits=SHORT_LIMITS))
    with trio.fail_after(10):
        while len(ktapd.daemon.sessions) < 2 or any(
            s.worker_pid is None for s in ktapd.daemon.sessions.values()
        ):
            await trio.sleep(0.01)
    (victim_session,) = [
        s for s in ktapd.daemon.sessions.values() if s.run_request.limits == LONG_LIMITS
    ]
    os.kill(victim_session.worker_pid, signal.SIGKILL)
    ended = (await victim.until(Ended))[-1]
    assert not ended.ok and ended.reason == "worker died: killed by SIGKILL"
    got = await bystander.until(Ended)
    assert text_of(got) == "survived\n" and got[-1].ok


async def test_worker_runs_as_the_unprivileged_worker_user(ktapd):
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    uid, gid, _name = ktapd.daemon.config.worker_account()
    c = await ktapd.client()
    await c.send(run_message("print(uid)"))
    assert text_of(await c.until(Ended)) == f"{uid}\n"
    # And as the kernel sees it, while a session runs: no root, no
    # capabilities, no supplementary groups, no way back (no_new_privs).
    await c.send(run_message(LONG_MAIN, limits=LONG_LIMITS))
    with trio.fail_after(10):
        while True:
            session = next(iter(ktapd.daemon.sessions.values()), None)
            status = _proc_status(session.worker_pid) if session and session.worker_pid else {}
            if status.get("Uid", "").split()[:1] == [str(uid)]:
                break
            await trio.sleep(0.02)
    assert status["Uid"].split() == [str(uid)] * 4
    assert status["Gid"].split() == [str(gid)] * 4
    assert status["Groups"].strip() == ""
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
    if shutil.which("setpriv"):
        assert status["NoNewPrivs"] == "1"


def _proc_status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").partition(":\t")[::2] for line in f)
    except OSError:
        return {}


async def test_client_vanishing_stops_its_session(ktapd):
    c = await ktapd.client()
    await c.send(run_message(LONG_MAIN, limits=LONG_LIMITS))
    with trio.fail_after(10):
        while not ktapd.daemon.sessions:
            await trio.sleep(0.01)
    session = next(iter(ktapd.daemon.sessions.values()))
    await c.aclose()
    with trio.fail_after(10):
        await session.finished.wait()
    # The main chunk does not look at stop requests; for a vanished client
    # the worker is killed after a short grace, and the session is gone.
    assert session.stop_reason == "disconnected"
    assert session.result == (False, "disconnected")
    with trio.fail_after(5):
        while ktapd.daemon.sessions:
            await trio.sleep(0.01)


async def test_detached_session_output_waits_for_attach(ktapd):
    c = await ktapd.client()
    await c.send(run_message('print("one") print("two") trace_end { print("end") }', detach=True))
    detached = await c.receive()
    assert isinstance(detached, Detached)
    session = ktapd.daemon.sessions[detached.session]
    with trio.fail_after(10):
        await session.finished.wait()
    await c.send(ListSessions())
    listing = await c.receive()
    assert [row["session"] for row in listing.data] == [detached.session]
    assert listing.data[0]["state"] == "ended" and not listing.data[0]["attached"]
    other = await ktapd.client()
    await other.send(Attach(detached.session))
    reply = await other.receive()
    assert reply == Reply("attach", {"session": detached.session, "state": "ended", "probes": 0})
    got = await other.until(Ended)
    assert text_of(got) == "one\ntwo\nend\n"
    with trio.fail_after(5):  # collected once delivered
        while detached.session in ktapd.daemon.sessions:
            await trio.sleep(0.01)


async def test_detach_leaves_the_session_running(ktapd):
    c = await ktapd.client()
    await c.send(run_message(SHORT_MAIN + ' print("later")', limits=SHORT_LIMITS))
    with trio.fail_after(10):
        while not ktapd.daemon.sessions:
            await trio.sleep(0.01)
    await c.send(Detach())
    got = await c.until(Detached)
    sid = got[-1].session
    await c.aclose()  # leaving after a detach does not stop it
    session = ktapd.daemon.sessions[sid]
    assert session.stop_reason is None
    other = await ktapd.client()
    await other.send(Attach(sid))
    assert isinstance(await other.receive(), Reply)
    got = await other.until(Ended)
    assert text_of(got) == "later\n" and got[-1].reason == "finished"


@pytest.mark.config(output_buffer_bytes=10 * 41)  # a one-row histogram with key "k" is 41
async def test_output_overflow_is_counted_as_lost(ktapd):
    c = await ktapd.client()
    # Every print_hist is its own record: 50 records into a 10-record buffer.
    await c.send(
        run_message('var t = {} t["k"] = 1 for (i = 1, 50) { print_hist(t) }', detach=True)
    )
    sid = (await c.receive()).session
    with trio.fail_after(10):
        await ktapd.daemon.sessions[sid].finished.wait()
    await c.send(Attach(sid))
    got = await c.until(Ended)
    lost = [m for m in got if isinstance(m, Lost)]
    hists = [r for r in records_of(got) if isinstance(r, records.Histogram)]
    assert len(hists) == 10
    assert lost and lost[0].reason == "output" and lost[0].count == 40
    assert got.index(lost[0]) < got.index(
        next(m for m in got if isinstance(m, Output))
    )  # lost comes first
    summary = [r for r in records_of(got) if isinstance(r, records.Lost)]
    assert summary == [records.Lost("output", 40)]


async def test_kill_and_list_respect_sessions(ktapd):
    owner = await ktapd.client()
    await owner.send(run_message(LONG_MAIN, limits=LONG_LIMITS, detach=True))
    sid = (await owner.receive()).session
    admin = await ktapd.client()
    await admin.send(Kill(sid + 100))
    refusal = await admin.receive()
    assert (
        isinstance(refusal, ErrorMessage)
        and refusal.of == "kill"
        and f"no session {sid + 100}" in refusal.message
    )
    await admin.send(Kill(sid))
    assert await admin.receive() == Reply("kill", {"session": sid})
    assert ktapd.daemon.sessions[sid].stop_reason == "killed"


async def test_status_reports_the_daemon(ktapd):
    c = await ktapd.client()
    await c.send(Status())
    reply = await c.receive()
    assert reply.of == "status"
    assert (
        reply.data["version"] and reply.data["protocol"] == 1 and reply.data["pid"] == os.getpid()
    )
    assert set(reply.data["features"]) == {"tracepoints", "kprobes", "uprobes", "ftrace", "profile"}


async def test_shutdown_ends_sessions_and_returns(ktapd):
    c = await ktapd.client()
    await c.send(run_message('print("x")', detach=True))
    await c.receive()
    with trio.fail_after(15):
        await ktapd.daemon.shutdown()
    assert ktapd.daemon.stopping
    with pytest.raises(OSError):
        await ktapd.client()


async def test_a_connection_reset_hurts_no_one_else(ktapd):
    # Closing a Unix socket with unread data makes the daemon's next read
    # fail with ECONNRESET (not a clean end of stream).
    c = await ktapd.client()
    await c.send(Status())
    await trio.sleep(0.2)  # the reply sits unread in our buffer
    c.stream.socket.close()
    bystander = await ktapd.client()
    await bystander.send(run_message('for (i = 1, 2000) { print("line", i) }'))
    await bystander.receive()
    # A streaming client resets too.
    sock = bystander.stream.socket
    sock.close()
    with trio.fail_after(10):
        while ktapd.daemon.sessions or ktapd.daemon.clients:
            await trio.sleep(0.02)
    other = await ktapd.client()
    await other.send(run_message('print("fine")'))
    assert text_of(await other.until(Ended)) == "fine\n"


async def test_trace_pid_must_name_a_live_process(ktapd):
    c = await ktapd.client()
    for pid in (0, 2**22 + 12345):
        await c.send(run_message('print("x")', trace_pid=pid))
        refusal = await c.receive()
        assert isinstance(refusal, ErrorMessage) and refusal.message == f"no process {pid}"
    assert not ktapd.daemon.sessions


async def test_killing_a_detached_session_discards_it(ktapd):
    c = await ktapd.client()
    await c.send(run_message(SHORT_MAIN, limits=SHORT_LIMITS, detach=True))
    sid = (await c.receive()).session
    await c.send(Kill(sid))
    assert await c.receive() == Reply("kill", {"session": sid})
    with trio.fail_after(10):
        while sid in ktapd.daemon.sessions:
            await trio.sleep(0.02)


@pytest.mark.config(output_buffer_bytes=4096)
async def test_lost_text_is_counted_in_lines(ktapd):
    c = await ktapd.client()
    await c.send(run_message('for (i = 1, 1000) { print("line", i) } print("x")', detach=True))
    sid = (await c.receive()).session
    with trio.fail_after(10):
        await ktapd.daemon.sessions[sid].finished.wait()
    await c.send(Attach(sid))
    got = await c.until(Ended)
    delivered = text_of(got).count("\n")
    lost = sum(m.count for m in got if isinstance(m, Lost) and m.reason == "output")
    assert lost > 0 and delivered + lost == 1001


async def test_shutdown_does_not_wait_forever_for_a_client_that_stops_reading(tmp_path):
    path = os.path.join(tempfile.mkdtemp(prefix="ktapd-test-"), "d.sock")
    daemon = Daemon(Config())
    with trio.fail_after(server.SHUTDOWN_GRACE_S + server.FLUSH_GRACE_S + 10):
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.serve, bind_socket(path, 0o600))
            c = await RawClient.connect(path)
            await c.send(run_message('for (i = 1, 100000) { print("a long line of output", i) }'))
            while not daemon.sessions or not next(iter(daemon.sessions.values())).finished.is_set():
                await trio.sleep(0.05)
            # We never read: the daemon's pump is stuck sending to us.
            await daemon.shutdown()
        # The daemon's serve() returned: nothing waited for us.
    shutil.rmtree(os.path.dirname(path))


async def test_exit_stops_the_session_and_trace_end_still_runs(ktapd):
    c = await ktapd.client()
    await c.send(
        run_message(
            SHORT_MAIN + ' print("main done") trace_end { print("end") }', limits=SHORT_LIMITS
        )
    )
    await c.send(Exit())  # arrives while the main chunk runs: honoured when it ends
    got = await c.until(Ended)
    assert text_of(got) == "main done\nend\n"
    assert got[-1] == Ended(got[-1].session, True, "exit")


@pytest.mark.config(worker_memory_bytes=400 * 1024 * 1024)
async def test_a_script_past_the_memory_cap_ends_only_its_session(ktapd):
    hog = await ktapd.client()
    await hog.send(
        run_message(
            "var all = {}\n"
            "for (i = 1, 1000) {\n"
            "    var t = table.new(0, 100000)\n"
            "    for (j = 1, 100000) { t[j] = j }\n"
            "    all[i] = t\n"
            "}\n"
            'print("not reached")',
            limits={"main_steps": 1_000_000_000, "table_entries_max": 1_000_000},
        )
    )
    with trio.fail_after(60):
        got = await hog.until(Ended)
    assert not got[-1].ok
    errors = [r for r in records_of(got) if isinstance(r, records.Error)]
    assert errors and "memory" in errors[0].message.lower(), got
    assert "not reached" not in text_of(got)
    bystander = await ktapd.client()
    await bystander.send(run_message('print("still serving")'))
    assert text_of(await bystander.until(Ended)) == "still serving\n"
