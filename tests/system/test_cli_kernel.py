"""ktapctl end to end through a real ktapd on a private socket (root, real
kernel): every client option, the verbs, Ctrl-C, embedded mode.

A ktapd subprocess serves the whole module; each test runs the real
``python -m ktapctl.cli`` as a user would.  Workloads call getppid(2), a
system call nothing else in them makes, so counts are exact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from kernel_support import kernel_unavailable_reason, require_kernel

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
KTAPD = [sys.executable, "-m", "ktapd"]
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
SDT_BINARY = "/usr/bin/python3.11"  # Debian builds CPython with SDT markers


def getppid_loop(times: int, pause: float = 0.0) -> list[str]:
    """A workload that calls getppid() exactly ``times`` times."""
    code = f"import os, time\nfor _ in range({times}):\n    os.getppid()\n    time.sleep({pause})\n"
    return [sys.executable, "-c", code]


def ktapctl(sock, *args, timeout=60, check_status=None):
    result = subprocess.run(
        [sys.executable, "-m", "ktapctl.cli", "--socket", sock, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check_status is not None:
        assert result.returncode == check_status, (result.stdout, result.stderr)
    return result


def popen_ktapctl(sock, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "ktapctl.cli", "--socket", sock, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(stream, pattern, timeout=20):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"{pattern!r} not seen; got {seen}")


COUNT_GETPPID = (
    'var n = 0\ntrace syscalls:sys_enter_getppid { n += 1 }\ntrace_end { print("getppid", n) }\n'
)


def test_one_liner_and_script_args(daemon):
    r = ktapctl(daemon, "-e", "print(arg[0], arg[1] + 1, arg[2])", "41", "x y", check_status=0)
    assert r.stdout == "(command line)\t42\tx y\n"


def test_script_file_arg0_is_its_path(daemon, tmp_path):
    script = tmp_path / "a.kp"
    script.write_text('print(arg[0], "ran")\n')
    r = ktapctl(daemon, str(script), check_status=0)
    assert r.stdout == f"{script}\tran\n"


def test_compile_error_goes_to_stderr(daemon):
    r = ktapctl(daemon, "-e", "print(1", check_status=3)
    assert r.stdout == ""
    assert "(command line):1:" in r.stderr and "error" in r.stderr


def test_runtime_error_is_in_the_output_stream(daemon):
    r = ktapctl(daemon, "-e", "var z = arg[1]\nprint(10 / z)", "0", check_status=1)
    assert r.stdout.startswith("error: divide 0")
    assert "(command line):2" in r.stdout


def test_workload_counts_exactly_and_prints_tracing_line(daemon):
    r = ktapctl(daemon, "-e", COUNT_GETPPID, "--", *getppid_loop(5), check_status=0)
    assert r.stdout == "Tracing... Hit Ctrl-C to end.\ngetppid\t5\n"


def test_quiet(daemon):
    r = ktapctl(daemon, "-q", "-e", COUNT_GETPPID, "--", *getppid_loop(3), check_status=0)
    assert r.stdout == "getppid\t3\n"


def test_pid_option_ends_with_the_process(daemon):
    target = subprocess.Popen(getppid_loop(20, 0.05))
    try:
        r = ktapctl(daemon, "-q", "-p", str(target.pid), "-e", COUNT_GETPPID, check_status=0)
    finally:
        target.wait(timeout=30)
    count = int(r.stdout.split()[1])
    assert 1 <= count <= 20


def test_cpu_option_limits_profile_to_one_cpu(daemon):
    src = (
        "var s = {}\nprofile-10ms { s[cpu] += 1 }\ntick-1s { exit() }\n"
        "trace_end { for (k, v in pairs(s)) { print(k) } }\n"
    )
    r = ktapctl(daemon, "-q", "-C", "0", "-e", src, check_status=0)
    assert r.stdout.split() == ["0"]


def test_timestamps(daemon):
    src = "trace syscalls:sys_enter_getppid { print(argstr) }"
    r = ktapctl(daemon, "-q", "-T", "-e", src, "--", *getppid_loop(2), check_status=0)
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    assert all(re.match(r"^ *\d+\.\d{6}: sys_getppid\(", line) for line in lines), lines


def test_output_file(daemon, tmp_path):
    out = tmp_path / "out.txt"
    r = ktapctl(daemon, "-q", "-o", str(out), "-e", COUNT_GETPPID, "--", *getppid_loop(2))
    assert r.returncode == 0 and r.stdout == ""
    assert out.read_text() == "getppid\t2\n"
    assert out.stat().st_mode & 0o777 == 0o600


def test_dry_run_keeps_handlers_off(daemon):
    r = ktapctl(daemon, "-q", "-d", "-e", COUNT_GETPPID, "--", *getppid_loop(3), check_status=0)
    assert r.stdout == "getppid\t0\n"


def test_simple_tracing(daemon):
    r = ktapctl(
        daemon, "-q", "-s", "syscalls:sys_enter_getppid", "--", *getppid_loop(2), check_status=0
    )
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    cpu, tid, comm, argstr = lines[0].split("\t")
    assert int(cpu) >= 0 and int(tid) > 0 and comm.startswith("python")
    assert argstr.startswith("sys_getppid(")


def test_print_bytecode_needs_no_daemon():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ktapctl.cli",
            "--socket",
            "/nonexistent",
            "-b",
            "-e",
            COUNT_GETPPID,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    assert "; probe 0: trace syscalls:sys_enter_getppid" in r.stdout


def test_list_events(daemon):
    r = ktapctl(daemon, "-le", "syscalls:sys_enter_getpp*", check_status=0)
    assert r.stdout == "syscalls:sys_enter_getppid\n"
    r = ktapctl(daemon, "-le", check_status=0)
    assert "sched:sched_switch" in r.stdout.splitlines()


def test_list_functions_and_markers(daemon):
    # The binary is named as the user wrote it or by its real path
    # (libc.so.6 is a link), depending on how the daemon answers.
    names = {LIBC, os.path.realpath(LIBC)}
    r = ktapctl(daemon, "-lf", LIBC, check_status=0)
    functions = r.stdout.splitlines()
    assert {f"probe:{name}:malloc" for name in names} & set(functions), functions[:5]
    assert all(line.startswith("probe:") for line in functions)
    if not os.path.exists(SDT_BINARY):
        pytest.skip(f"{SDT_BINARY} not installed")
    r = ktapctl(daemon, "-lm", SDT_BINARY, check_status=0)
    markers = r.stdout.splitlines()
    assert markers and all(line.startswith("sdt:") for line in markers), markers[:5]
    assert any(line.endswith(":function__entry") for line in markers), markers


def test_version():
    r = subprocess.run(
        [sys.executable, "-m", "ktapctl.cli", "-V"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.startswith("ktapctl ")


def test_json(daemon):
    r = ktapctl(daemon, "--json", "-e", COUNT_GETPPID, "--", *getppid_loop(1), check_status=0)
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert docs[0]["type"] == "started"
    assert {"type": "text", "text": "getppid\t1\n"} in docs
    assert docs[-1]["type"] == "ended" and docs[-1]["ok"] is True


def test_print_hist_from_the_daemon(daemon):
    src = 'var t = {}\nt["read"] = 300\nt["write"] = 100\nt["open"] = 50\nt["close"] = 50\nprint_hist(t)'
    r = ktapctl(daemon, "-e", src, check_status=0)
    assert r.stdout == (
        "                         value ------------- Distribution ------------- count\n"
        "                           read |@@@@@@@@@@@@@@@@@@@@@@                300\n"
        "                          write |@@@@@@@                               100\n"
        "                          close |@@@                                   50\n"
        "                           open |@@@                                   50\n"
    )


def test_ctrl_c_runs_trace_end(daemon):
    proc = popen_ktapctl(daemon, "-e", 'tick-100ms { }\ntrace_end { print("bye") }')
    read_until(proc.stdout, "Tracing")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out == "bye\n"


def test_submit_detach_list_attach_kill_status(daemon):
    src = (
        "var n = 0\n"
        'tick-100ms { n += 1\n if (n == 3) { print("three") } }\n'
        'trace_end { print("ended after", n > 2) }\n'
    )
    r = ktapctl(daemon, "submit", "--detach", "-e", src, check_status=0)
    session = int(r.stdout.strip())
    listing = ktapctl(daemon, "list", check_status=0).stdout.splitlines()
    assert listing[0].split()[0] == "session"
    assert any(line.split()[0] == str(session) for line in listing[1:]), listing
    as_json = json.loads(ktapctl(daemon, "--json", "list", check_status=0).stdout)
    assert any(row["session"] == session for row in as_json)
    time.sleep(0.5)
    attach = popen_ktapctl(daemon, "attach", str(session))
    read_until(attach.stdout, "three")
    ktapctl(daemon, "kill", str(session), check_status=0)
    out, err = attach.communicate(timeout=20)
    assert attach.returncode == 0, err
    assert "ended after\ttrue\n" in out
    status = ktapctl(daemon, "status", check_status=0).stdout
    assert "version:" in status and "features.tracepoints: True" in status


def test_refused_request_exit_status(daemon):
    r = ktapctl(daemon, "kill", "999999", check_status=1)
    assert r.stderr.startswith("ktapctl: ")


def test_embedded_mode_without_a_daemon():
    reason = kernel_unavailable_reason()
    if reason:
        require_kernel(reason)
    if not (ROOT / "ktapd" / "embedded.py").exists():
        require_kernel("ktapd.embedded is not in this checkout yet")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ktapctl.cli",
            "--embedded",
            "-q",
            "-e",
            COUNT_GETPPID,
            "--",
            *getppid_loop(4),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "getppid\t4\n"


def test_compiled_bytecode_runs_directly(daemon, tmp_path):
    script = tmp_path / "count.kp"
    script.write_text(COUNT_GETPPID)
    kpc = tmp_path / "count.kpc"
    subprocess.run(
        [sys.executable, "-m", "ktapctl.cli", "compile", "-o", str(kpc), str(script)],
        cwd=ROOT,
        check=True,
    )
    r = ktapctl(daemon, "-q", str(kpc), "--", *getppid_loop(2), check_status=0)
    assert r.stdout == "getppid\t2\n"
    listing = ktapctl(daemon, "disasm", str(kpc), check_status=0).stdout
    assert listing == ktapctl(daemon, "-b", str(script), check_status=0).stdout


def test_verbose_reports_the_session_on_stderr(daemon):
    r = ktapctl(daemon, "-v", "-q", "-e", COUNT_GETPPID, "--", *getppid_loop(1), check_status=0)
    # The daemon may add its own verbose lines to the output stream (ktap's
    # "[verbose] ..." lines did the same); the script's output ends it.
    assert r.stdout.endswith("getppid\t1\n")
    assert re.search(r"session \d+ started, \d+ probes on", r.stderr), r.stderr


def test_refused_run_unknown_event(daemon):
    r = ktapctl(daemon, "-e", "trace nosuchsubsys:nosuchevent { }", check_status=1)
    assert r.stdout == ""
    assert r.stderr.startswith("ktapctl: ") and "nosuchsubsys" in r.stderr


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def public_daemon(tmp_path_factory):
    """A ktapd whose socket an unprivileged user can reach (0666 in a 0755 dir)."""
    reason = kernel_unavailable_reason()
    if reason:
        require_kernel(reason)
    directory = Path(tempfile.mkdtemp(prefix="ktap-cli-test-"))
    directory.chmod(0o755)
    sock = directory / "ktapd.sock"
    proc = subprocess.Popen(
        [*KTAPD, "--socket", str(sock)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ktapd did not start: {proc.stderr.read().decode()}")
            time.sleep(0.02)
        yield str(sock)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(directory, ignore_errors=True)


def as_nobody(*args, env=None):
    return subprocess.run(
        [*NOBODY, sys.executable, "-m", "ktapctl.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_unprivileged_user_through_the_daemon(public_daemon):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is not installed")
    r = as_nobody("--socket", public_daemon, "-e", "print(arg[1] * 2)", "21")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "42\n"
    # System-wide tracing is for administrators: refused, with a reason.
    r = as_nobody("--socket", public_daemon, "-e", COUNT_GETPPID)
    assert r.returncode == 1
    assert r.stdout == "" and r.stderr.startswith("ktapctl: ")


def test_unprivileged_user_without_a_daemon(tmp_path):
    """No daemon: a probe-less script runs embedded for anyone; a tracing
    script says the daemon is missing (ordinary users cannot trace alone)."""
    reason = kernel_unavailable_reason()
    if reason:
        require_kernel(reason)
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is not installed")
    from ktapctl.cli import DEFAULT_SOCKET

    if Path(DEFAULT_SOCKET).exists():
        pytest.skip(f"something listens at {DEFAULT_SOCKET}; no fallback to test")
    # The embedded daemon starts its session worker with this interpreter,
    # as the user: that needs the interpreter to be executable by them
    # (not so for a Python installed under a 0700 /root).
    nested = subprocess.run(
        [
            *NOBODY,
            sys.executable,
            "-c",
            "import subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True)",
        ],
        capture_output=True,
    )
    if nested.returncode != 0:
        pytest.skip(f"{sys.executable} cannot start itself as an unprivileged user here")
    env = {k: v for k, v in os.environ.items() if k != "KTAP_SOCKET"}
    env["HOME"] = str(tmp_path)
    tmp_path.chmod(0o777)
    r = as_nobody("-e", 'print("alone")', env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "alone\n"
    r = as_nobody("-e", COUNT_GETPPID, env=env)
    assert r.returncode == 1
    assert "is the ktapd service running?" in r.stderr
