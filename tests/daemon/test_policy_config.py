"""Policy decisions, configuration files, the systemd glue and the embedded daemon."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import stat
import tempfile

import pytest
import trio
from daemon_helpers import RawClient, compile_source, run_message, text_of

from ktapd import _systemd, embedded, policy
from ktapd.config import Config, ConfigError, from_dict, load
from protocol.bytecode.program import Probe, Program
from protocol.connection import CLIENT, NEED_DATA, Connection
from protocol.limits import RuntimeLimits
from protocol.messages import Ended, Hello

ROOT = policy.Peer(pid=1, uid=0, gid=0)
USER = policy.Peer(pid=2, uid=1000, gid=1000, groups=frozenset({1000}))


def _kinds(source: str) -> frozenset[str]:
    return policy.event_kinds(compile_source(source))


def test_event_kinds_come_from_the_probe_table():
    assert _kinds('print("x")') == frozenset()
    assert _kinds("trace_end { }") == frozenset()
    assert _kinds("trace sched:sched_switch { } tick-1s { }") == {"tracepoint", "tick"}
    assert _kinds("trace probe:/bin/ls:main { } trace probe:vfs_read { }") == {"uprobe", "kprobe"}
    weird = Program(functions=(), probes=(Probe("trace", ("what is this",)),), source_name="x")
    assert policy.event_kinds(weird) == {"unknown"}


def test_root_may_do_everything():
    config = Config()
    for action in policy.ACTIONS:
        request = policy.Request(
            action, event_kinds=frozenset({"kprobe"}), owner=123, path="/nonexistent"
        )
        assert policy.decide(ROOT, request, config) is None


def test_users_run_probe_less_scripts_and_only_configured_kinds():
    config = Config()
    assert policy.decide(USER, policy.Request(policy.RUN), config) is None
    refusal = policy.decide(
        USER, policy.Request(policy.RUN, event_kinds=frozenset({"tracepoint"})), config
    )
    assert "only administrators may open tracepoint events" in refusal
    allowed = Config(user_event_kinds=("tick",))
    assert (
        policy.decide(USER, policy.Request(policy.RUN, event_kinds=frozenset({"tick"})), allowed)
        is None
    )
    assert policy.decide(USER, policy.Request(policy.STATUS), config) is None
    assert policy.decide(USER, policy.Request(policy.EVENTS), config) is None


def test_users_see_and_stop_only_their_own_sessions():
    config = Config()
    for action in (policy.SEE, policy.STOP):
        assert policy.decide(USER, policy.Request(action, owner=1000), config) is None
        assert "another user" in policy.decide(USER, policy.Request(action, owner=0), config)


def test_admin_groups_make_administrators():
    import grp

    group = grp.getgrgid(0).gr_name
    member = policy.Peer(pid=3, uid=1000, gid=1000, groups=frozenset({0, 1000}))
    assert not policy.is_admin(member, Config())
    assert policy.is_admin(member, Config(admin_groups=(group, "no-such-group-here")))


def test_symbols_need_read_permission():
    # Not tmp_path: pytest's base directory is private to root, which is the point below.
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="ktapd-policy-"))
    tmp_path.chmod(0o755)
    readable = tmp_path / "readable"
    readable.write_bytes(b"")
    readable.chmod(0o644)
    private = tmp_path / "private"
    private.write_bytes(b"")
    private.chmod(0o600)
    config = Config()
    assert policy.decide(USER, policy.Request(policy.SYMBOLS, path=str(readable)), config) is None
    assert "permission denied" in policy.decide(
        USER, policy.Request(policy.SYMBOLS, path=str(private)), config
    )
    assert policy.decide(
        USER, policy.Request(policy.SYMBOLS, path=str(tmp_path / "missing")), config
    )
    tmp_path.chmod(0o700)  # a readable file in a private directory is not readable
    try:
        assert policy.decide(USER, policy.Request(policy.SYMBOLS, path=str(readable)), config)
    finally:
        shutil.rmtree(tmp_path)


def test_peer_credentials_come_from_the_kernel():
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        peer = policy.peer_of_socket(a)
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert os.getgid() in peer.groups


def test_config_file(tmp_path):
    path = tmp_path / "ktapd.toml"
    path.write_text(
        'socket = "/tmp/x.sock"\nsocket_mode = 0o660\nadmin_groups = ["wheel"]\n'
        "output_buffer_bytes = 5\n[limits]\nstring_bytes = 1024\n"
    )
    config = load(path)
    assert str(config.socket) == "/tmp/x.sock" and config.socket_mode == 0o660
    assert config.admin_groups == ("wheel",) and config.output_buffer_bytes == 5
    assert config.limits == RuntimeLimits(string_bytes=1024)


@pytest.mark.parametrize(
    ("doc", "complaint"),
    [
        ({"sockets": "/x"}, "unknown key 'sockets'"),
        ({"socket_mode": "0660"}, "wrong type"),
        ({"admin_groups": [1]}, "list of strings"),
        ({"output_buffer_bytes": 0}, "at least 1"),
        ({"limits": {"string_byte": 1}}, "unknown limit"),
        ({"limits": {"string_bytes": -1}}, "positive integer"),
        ({"worker_user": True}, "wrong type"),
    ],
)
def test_config_errors_name_the_key(doc, complaint):
    with pytest.raises(ConfigError, match=complaint):
        from_dict(doc)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("socket = \n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load(bad)


def test_worker_account_falls_back_to_nobody():
    uid, _gid, name = Config().worker_account()
    assert name in ("ktapd-worker", "nobody") and uid != 0
    with pytest.raises(ConfigError, match="does not exist"):
        Config(worker_user="no-such-user-here").worker_account()


def test_notify_sends_to_notify_socket(tmp_path, monkeypatch):
    address = str(tmp_path / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    with receiver:
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        assert _systemd.notify("READY=1")
        assert receiver.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not _systemd.notify("READY=1")


def test_listen_fds_only_for_our_pid(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert _systemd.listen_fds() == [3]
    assert "LISTEN_FDS" not in os.environ  # not passed on to workers
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert _systemd.listen_fds() == []


def test_embedded_daemon_serves_a_private_socket():
    with embedded.serve() as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700

        async def session() -> str:
            c = await RawClient.connect(path)
            await c.send(run_message('print("embedded")'))
            return text_of(await c.until(Ended))

        assert trio.run(session) == "embedded\n"
    assert not os.path.exists(os.path.dirname(path))


async def test_a_non_root_peer_is_refused_probes(ktapd):
    """A real connection from another uid (a forked child that drops to nobody):
    the daemon learns the uid from SO_PEERCRED and refuses a tracepoint."""
    if os.geteuid() != 0:
        pytest.skip("needs root to connect as another user")
    run = run_message("trace sched:sched_switch { }")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: plain blocking sockets, then _exit, never back into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            conn = Connection(CLIENT)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(20)
                sock.connect(ktapd.path)
                sock.sendall(conn.send(Hello()))
                answers: list = []
                while len(answers) < 2:
                    event = conn.next_event()
                    if event is NEED_DATA:
                        conn.receive_data(sock.recv(65536))
                        continue
                    answers.append(event)
                    if len(answers) == 1:
                        sock.sendall(conn.send(run))
            refusal = answers[1]
            os.write(write_end, f"{type(refusal).__name__}|{refusal.of}|{refusal.message}".encode())
            status = 0
        except BaseException as exc:
            os.write(write_end, f"child failed: {exc!r}".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        with trio.fail_after(30):
            answer = await trio.to_thread.run_sync(os.read, read_end, 4096)
            _, status = await trio.to_thread.run_sync(os.waitpid, pid, 0)
    finally:
        os.close(read_end)
    assert status == 0, answer
    kind, of, message = answer.decode().split("|", 2)
    assert (kind, of) == ("ErrorMessage", "run")
    assert "only administrators may open tracepoint events" in message
    assert not ktapd.daemon.sessions


def test_users_have_a_session_quota():
    config = Config(max_sessions_per_user=2)
    assert policy.decide(USER, policy.Request(policy.RUN, sessions_owned=1), config) is None
    assert "at most 2" in policy.decide(USER, policy.Request(policy.RUN, sessions_owned=2), config)
    assert policy.decide(ROOT, policy.Request(policy.RUN, sessions_owned=99), config) is None


def test_ring_size_fits_the_locked_memory_budget():
    from ktapd.worker import RING_PAGES, ring_pages

    assert ring_pages(2, 8 << 20) == RING_PAGES
    many = ring_pages(64, 8 << 20)
    assert 64 * (many + 1) * 4096 <= 4 << 20 and many & (many - 1) == 0
    assert ring_pages(100_000, 8 << 20) == 1
