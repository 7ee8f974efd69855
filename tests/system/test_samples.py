"""Every script in samples/ runs on the real kernel and prints what its
header says (root; a real ktapd on a private socket; short durations)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
HIST_HEADER = "                         value ------------- Distribution ------------- count"
QUANT_HEADER = "           value  ------------- Distribution ------------- count"
# A print_hist row: a 31-column key (may be blank: a task without a
# comm), " |", a 38-column bar, the count.
HIST_ROW = re.compile(r"^.{31} \|[@ ]{38}\d+$")


def run_sample(sock, name, *args, timeout=60):
    result = subprocess.run(
        [sys.executable, "-m", "ktapctl.cli", "--socket", sock, "-q", str(SAMPLES / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def busy(seconds: float = 0.5) -> list[str]:
    """A workload that makes system calls, reads, opens and mallocs."""
    code = (
        "import os, time\n"
        f"end = time.time() + {seconds}\n"
        # A bytes path is handed to openat(2) from the bytes object itself,
        # which lives as long as the process: user_string() reads it after
        # the event (from userspace it cannot read at event time), so a
        # temporary buffer Python frees after the call could be reused.
        "PATH = b'/etc/hostname'\n"
        "while time.time() < end:\n"
        "    os.close(os.open(PATH, os.O_RDONLY))\n"
        "    with open(PATH) as f: f.read()\n"
        "    os.getppid()\n"
    )
    return [sys.executable, "-c", code]


def test_syscall_top(daemon):
    out = run_sample(daemon, "syscall_top.kp", "1")
    lines = out.splitlines()
    assert lines[0] == HIST_HEADER
    assert 1 <= len(lines) - 1 <= 21
    assert all(HIST_ROW.match(line) or line.strip() == "... |" for line in lines[1:]), lines


def test_syscall_hist_of_a_command(daemon):
    out = run_sample(daemon, "syscall_hist.kp", "--", *busy(0.3))
    lines = out.splitlines()
    assert lines[0] == HIST_HEADER
    keys = [line.split("|")[0].strip() for line in lines[1:]]
    assert "sys_enter_getppid" in keys and "sys_enter_read" in keys


def test_opensnoop(daemon):
    out = run_sample(daemon, "opensnoop.kp", "--", *busy(0.3))
    lines = out.splitlines()
    assert lines[0].split() == ["COMM", "PID", "PATH"]
    # Paths of other processes may read back as nil, or as whatever their
    # memory holds by the time it is read (even text with newlines): only
    # the workload's own, stable path is checked.
    rows = [line.split() for line in lines[1:]]
    assert any(row[-1:] == ["/etc/hostname"] for row in rows), lines[:10]


def test_read_latency(daemon):
    out = run_sample(daemon, "read_latency.kp", "1", "--", *busy(0.3))
    lines = out.splitlines()
    summary = re.match(
        r"read\(2\) latency, ns: count (\d+) avg (\d+) min (\d+) max (\d+)", lines[0]
    )
    assert summary, lines[0]
    count, avg, low, high = map(int, summary.groups())
    assert count > 0 and low <= avg <= high
    assert lines[1] == QUANT_HEADER
    assert sum(int(line.split()[-1]) for line in lines[2:]) == count


def test_profile(daemon):
    out = run_sample(daemon, "profile.kp", "1")
    lines = out.splitlines()
    assert lines[0] == HIST_HEADER
    assert len(lines) >= 2 and all(HIST_ROW.match(line) for line in lines[1:]), lines


def test_profile_ustack(daemon):
    code = "import time\nend = time.time() + 0.5\nwhile time.time() < end: sum(range(1000))\n"
    out = run_sample(daemon, "profile_ustack.kp", "--", sys.executable, "-c", code)
    lines = out.splitlines()
    assert lines[0] == HIST_HEADER
    bars = [line for line in lines[1:] if line.startswith(" " * 31 + " |")]
    assert bars, lines


def test_malloc_size(daemon):
    out = run_sample(daemon, "malloc_size.kp", "--", "ls", "-l", "/usr/bin")
    lines = out.splitlines()
    # ls writes to the same stdout (a workload keeps the terminal); our
    # output starts at the summary line.
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("malloc calls:")) :]
    calls = re.match(r"malloc calls:\t(\d+)\tbytes asked:\t(\d+)", lines[0])
    assert calls and int(calls.group(1)) > 0, lines[0]
    assert lines[1] == QUANT_HEADER
    assert HIST_HEADER in lines


def test_every_sample_has_a_test():
    tested = {name for name in re.findall(r'"(\w+\.kp)"', Path(__file__).read_text())}
    assert {p.name for p in SAMPLES.glob("*.kp")} <= tested


def test_make_run_path_without_a_daemon(daemon):
    """`make run` runs syscall_top.kp with no --socket: as root with no
    daemon at the default socket, ktapctl starts an embedded one."""
    from ktapctl.cli import DEFAULT_SOCKET

    if Path(DEFAULT_SOCKET).exists():
        pytest.skip(f"a daemon may be listening at {DEFAULT_SOCKET}; the fallback is not taken")
    env = {k: v for k, v in os.environ.items() if k != "KTAP_SOCKET"}
    result = subprocess.run(
        [sys.executable, "-m", "ktapctl.cli", "samples/syscall_top.kp", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0] == "Tracing... Hit Ctrl-C to end."
    assert lines[1] == HIST_HEADER
