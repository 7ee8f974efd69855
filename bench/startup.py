"""Start-up cost of ktapctl, measured side by side in one run.

1. ``ktapctl -e 'print(1)'`` against ``python3 -c 'print(1)'`` (target: at
   most 0.3 s slower), through a running daemon and with --embedded;
   also ``ktapctl -V`` and ``-b`` (no daemon) to show where time goes.
2. ``ktapctl -q -e 'trace syscalls:sys_enter_getppid {}' -- true`` against
   bpftrace's ``tracepoint:syscalls:sys_enter_getppid {}`` with ``-c true``
   (bpftrace is installed with apt-get when missing and we are root).

Prints medians of N runs (default 10; argv[1] changes it), back to back
unless a row says otherwise.  ktapctl's compile cache is on (a script run
again skips the compiler), except in the row that says it is off.  The daemon
is the one at $KTAP_SOCKET or the default socket when it answers, else
this checkout's ktapd started on a private socket for the run
(``ktapd_socket``, also used by bench/latency.py).  This module
must not change the system beyond installing bpftrace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOCKET = "/run/ktapd/ktapd.sock"


def answers(path: str) -> bool:
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        return True
    return False


@contextlib.contextmanager
def ktapd_socket():
    """Yield the socket path of a running ktapd."""
    existing = os.environ.get("KTAP_SOCKET") or DEFAULT_SOCKET
    if answers(existing):
        yield existing
        return
    with tempfile.TemporaryDirectory(prefix="ktap-bench-") as tmp:
        path = os.path.join(tmp, "ktapd.sock")
        log = open(os.path.join(tmp, "ktapd.log"), "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "ktapd", "--socket", path], cwd=ROOT, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 20
            while not answers(path):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    sys.exit("ktapd did not start:\n" + Path(tmp, "ktapd.log").read_text())
                time.sleep(0.02)
            yield path
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


KTAPCTL = str(ROOT / ".venv" / "bin" / "ktapctl")
TARGET_S = 0.3


def wall(cmd: list[str], env: dict | None = None, runs: int = 10, pause: float = 0.0) -> float:
    """Median wall-clock seconds of ``cmd`` (one warm-up run first),
    ``pause`` seconds apart."""
    times = []
    for i in range(runs + 1):
        time.sleep(pause)
        start = time.perf_counter()
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}")
        if i:
            times.append(elapsed)
    return statistics.median(times)


def bpftrace() -> str | None:
    path = shutil.which("bpftrace")
    if path is None and os.geteuid() == 0:
        print("installing bpftrace (apt-get) ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "bpftrace"], capture_output=True)
        path = shutil.which("bpftrace")
    return path


def row(name: str, seconds: float, base: float | None = None) -> None:
    extra = f"  {seconds - base:+.3f} s  x{seconds / base:.2f}" if base else ""
    print(f"  {name:<58} {seconds:6.3f} s{extra}")


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print(f"median of {runs} runs (wall clock)")
    # The baseline is the interpreter ktapctl itself runs on (a `python3`
    # on PATH may be a shell shim, e.g. pyenv's, which would flatter us);
    # the system python3 is shown for reference.
    base = wall([sys.executable, "-c", "print(1)"], runs=runs)
    row(f"python3 -c 'print(1)'   ({sys.executable})", base)
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python:
        row(
            f"python3 -c 'print(1)'   ({system_python})",
            wall([system_python, "-c", "print(1)"], runs=runs),
            base,
        )
    row("ktapctl -V", wall([KTAPCTL, "-V"], runs=runs), base)
    row(
        "ktapctl -b -e 'print(1)'   (compile only)",
        wall([KTAPCTL, "-b", "-e", "print(1)"], runs=runs),
        base,
    )
    with ktapd_socket() as sock:
        env = dict(os.environ, KTAP_SOCKET=sock)
        row(
            "ktapctl status   (a one-shot request: no compiler)",
            wall([KTAPCTL, "status"], env=env, runs=runs),
            base,
        )
        through_daemon = wall([KTAPCTL, "-e", "print(1)"], env=env, runs=runs)
        row("ktapctl -e 'print(1)'   (running daemon)", through_daemon, base)
        # Back to back, each session may find the daemon's spare worker
        # still importing (it was started by the previous session); a
        # person typing commands gives it time.
        row(
            "ktapctl -e 'print(1)'   (runs 0.5 s apart)",
            wall([KTAPCTL, "-e", "print(1)"], env=env, runs=runs, pause=0.5),
            base,
        )
        embedded = wall([KTAPCTL, "--embedded", "-e", "print(1)"], runs=runs)
        row("ktapctl --embedded -e 'print(1)'", embedded, base)
        verdict = "OK" if through_daemon - base <= TARGET_S else "OVER"
        print(f"  target: ktapctl -e within {TARGET_S} s of python3: {verdict}")

        print("tracing a short command:")
        true = shutil.which("true") or "/bin/true"  # bpftrace wants one unambiguous path
        trace = [KTAPCTL, "-q", "-e", "trace syscalls:sys_enter_getppid {}", "--", true]
        ours = wall(trace, env=env, runs=runs)
        row("ktapctl -q -e 'trace syscalls:sys_enter_getppid {}' -- true", ours)
        # After the warm-up run every row above finds its bytecode in the
        # compile cache (ktapctl/program_cache.py); this one compiles.
        uncached = wall(trace, env=dict(env, KTAP_COMPILE_CACHE="0"), runs=runs)
        row("  the same, compile cache off (KTAP_COMPILE_CACHE=0)", uncached)
        bt = bpftrace()
        if bt is None:
            print("  bpftrace: not available (not root, or apt-get failed)")
        else:
            theirs = wall(
                [bt, "-q", "-e", "tracepoint:syscalls:sys_enter_getppid {}", "-c", true],
                runs=runs,
            )
            row("bpftrace -e 'tracepoint:syscalls:sys_enter_getppid {}' -c true", theirs)
            print(f"  ktapctl / bpftrace: x{ours / theirs:.2f}  (compile cache off: x{uncached / theirs:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
