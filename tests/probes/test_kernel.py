"""The probe layer on the real kernel (root): tracepoints, filters, per-task
events, uprobes, SDT, timers, user memory, losses, cleanup, and the
privileged/unprivileged split across processes."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from ktapd.probes import argstr, kprobe, registry, tracefs, uprobe
from ktapd.probes.formats import Decoder
from ktapd.probes.perf_event import OpenedEvents, ProbeError, RingSet, online_cpus

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("probes_kernel")]

GROUP = f"ktapd_t{os.getpid()}"


def _collect(rs: RingSet, until=None, timeout: float = 2.0) -> list:
    events: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rs.poll(0.05)
        rs.drain(events.append)
        if until is not None and until(events):
            break
    return events


def test_every_format_file_parses():
    count = 0
    for system, event in tracefs.list_events():
        if system.startswith("ktapd_"):
            continue  # other runs' uprobes come and go while we walk
        layout = tracefs.read_layout(system, event)
        assert layout.name == event and layout.id > 0
        Decoder(layout)
        argstr.renderer(layout)
        count += 1
    assert count > 100


def test_getppid_exact_count_per_task():
    n = 1234
    with registry.ProbeSet(GROUP, pid=os.getpid()) as ps:
        ps.add_trace(0, ["syscalls:sys_enter_getppid"])
        rs = RingSet(ps.opened, pages=64)  # 256 KiB holds all 1234 samples
        rs.enable()
        for _ in range(n):
            os.getppid()
        seen: list = []
        rs.finish(seen.append)
        rs.drain(seen.append)
        rs.close()
    mine = [e for e in seen if e.tid == os.getpid()]
    assert len(mine) == n
    assert rs.lost == 0
    assert mine[0].arg(0) == 110 and mine[0].probename == "sys_enter_getppid"
    assert mine[0].execname and mine[0].uid == 0
    assert mine[-1].time_ns >= mine[0].time_ns


def test_filter_is_applied_in_the_kernel():
    from protocol.bytecode.program import Probe

    with registry.ProbeSet(GROUP, pid=os.getpid()) as ps:
        ps.add_probe(0, Probe(kind="trace", events=("syscalls:sys_enter_close",),
                              filter="fd == 1234"))
        rs = RingSet(ps.opened, pages=8)
        rs.enable()
        for fd in (1234, 1235, 1234, 99, 1234):
            try:
                os.close(fd)
            except OSError:
                pass
        seen: list = []
        rs.finish(seen.append)
        rs.close()
    assert [e.field("fd") for e in seen] == [1234, 1234, 1234]
    assert rs.lost == 0  # the kernel did not count the filtered-out closes as lost


def test_rejected_filter_names_filter_and_event():
    with registry.ProbeSet(GROUP, pid=os.getpid()) as ps:
        with pytest.raises(ProbeError, match=r"filter /nosuchfield == 1/ on event "
                                             r"syscalls:sys_enter_close"):
            ps.add_trace(0, ["syscalls:sys_enter_close"], filter="nosuchfield == 1")


def test_unknown_tracepoint_is_a_clear_error():
    with registry.ProbeSet(GROUP) as ps, pytest.raises(ProbeError, match="no tracepoint"):
        ps.add_trace(0, ["nosuch:event_*"])


def _start(ctarget: str, *args: str) -> tuple[subprocess.Popen, int]:
    """Start ctarget in a mode that prints its pid and waits for "go"."""
    proc = subprocess.Popen([ctarget, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    return proc, int(proc.stdout.readline())


def _go(proc: subprocess.Popen) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_glob_opens_many_events_and_argstr_matches_trace_pipe(ctarget, tmp_path):
    """syscalls:sys_*_openat, plus argstr compared with the kernel's own trace output."""
    root = tracefs.root()
    event_dir = root / "events/syscalls/sys_enter_openat"
    proc, pid = _start(ctarget, "wait-open", str(tmp_path / "x"))
    (root / "trace").write_text("")
    with registry.ProbeSet(GROUP) as ps:
        # Other jobs on this machine open files too: keep to our process.
        descs = ps.add_trace(0, ["syscalls:sys_*_openat"], filter=f"common_pid == {pid}")
        assert {d.probename for d in descs} == {"sys_enter_openat", "sys_exit_openat"}
        rs = RingSet(ps.opened, pages=16)
        rs.enable()
        (event_dir / "filter").write_text(f"common_pid == {pid}")
        (event_dir / "enable").write_text("1")
        (root / "tracing_on").write_text("1")
        try:
            _go(proc)
            _go(proc)
            proc.wait()
        finally:
            (root / "tracing_on").write_text("0")
            (event_dir / "enable").write_text("0")
            (event_dir / "filter").write_text("0")
        seen: list = []
        rs.finish(seen.append)
        rs.close()
    trace = (root / "trace").read_text()
    (root / "trace").write_text("")
    ours = [e.argstr for e in seen if e.probename == "sys_enter_openat"]
    kernel = [line.split(": ", 1)[1].strip() for line in trace.splitlines()
              if f"-{pid} " in line and "sys_openat(" in line]
    assert ours and ours == kernel
    assert {e.execname for e in seen} == {"ctarget"}
    exits = [e for e in seen if e.probename == "sys_exit_openat"]
    assert exits and all(e.argstr.startswith("sys_openat -> 0x") for e in exits)


def test_user_string_reads_openat_path(ctarget, tmp_path):
    path = str(tmp_path / "some-file-name.txt")
    proc, pid = _start(ctarget, "wait-open", path)
    with registry.ProbeSet(GROUP) as ps:
        ps.add_trace(0, ["syscalls:sys_enter_openat"], filter=f"common_pid == {pid}")
        rs = RingSet(ps.opened, pages=16)
        rs.enable()
        strings = []

        def handler(event):  # read at delivery time, while the process lives
            strings.append(event.read_user_string(event.field("filename"), 511))
        _go(proc)  # it opens the file, then waits again
        try:
            deadline = time.monotonic() + 5
            while path not in strings and time.monotonic() < deadline:
                rs.poll(0.01)
                rs.drain(handler)
        finally:
            _go(proc)
            proc.wait()
        rs.close()
    assert path in strings


def test_read_user_string_of_bad_address_is_none():
    import ctypes

    from ktapd.probes.events import read_user_string

    assert read_user_string(os.getpid(), 8, 100) is None
    keep = ctypes.create_string_buffer(b"kept string\0")
    assert read_user_string(os.getpid(), ctypes.addressof(keep), 100) == "kept string"
    assert read_user_string(os.getpid(), ctypes.addressof(keep), 4) == "kept"


def test_per_task_event_follows_process_and_sees_its_exit(ctarget):
    proc, pid = _start(ctarget, "wait-getppid", "500")
    with registry.ProbeSet(GROUP, pid=pid) as ps:
        ps.add_trace(0, ["syscalls:sys_enter_getppid"])
        rs = RingSet(ps.opened, pages=16)
        rs.enable()
        _go(proc)
        seen = _collect(rs, until=lambda ev: pid in rs.exited, timeout=5)
        proc.wait()
        rs.finish(seen.append)
        rs.close()
    assert pid in rs.exited  # the EXIT record ends a -p session
    assert len(seen) == 500 and {e.pid for e in seen} == {pid}
    assert {e.execname for e in seen} == {"ctarget"}


def test_uprobe_values_retprobe_and_globs(ctarget):
    with registry.ProbeSet(GROUP) as ps:
        entry = ps.add_trace(1, [f"probe:{ctarget}:ktap_add a=%di b=%si"])
        ps.add_trace(2, [f"probe:{ctarget}:ktap_add%return r=$retval"])
        globbed = ps.add_trace(3, [f"probe:{ctarget}:ktap_*"])
        assert [d.probename for d in globbed] == ["ktap_add", "ktap_sub"]
        assert entry[0].arg_names == ("__probe_ip", "a", "b")
        defined = uprobe.list_defined(GROUP)
        assert len(defined) == 4
        rs = RingSet(ps.opened, pages=16)
        rs.enable()
        subprocess.run([ctarget, "calls", "5"], check=True)
        seen: list = []
        rs.finish(seen.append)
        rs.close()
    assert uprobe.list_defined(GROUP) == []  # close() removed them
    by_tag: dict[int, list] = {}
    for e in seen:
        by_tag.setdefault(e.tag, []).append(e)
    assert [(e.field("a"), e.field("b")) for e in by_tag[1]] == [(i, 100) for i in range(5)]
    assert [e.field("r") for e in by_tag[2]] == [i + 100 for i in range(5)]
    assert sorted(e.probename for e in by_tag[3]) == ["ktap_add"] * 5 + ["ktap_sub"]
    first = by_tag[1][0]
    assert first.arg(0) == first.field("__probe_ip") and first.arg(1) == 0
    assert "a=0x0" in first.argstr or "a=0" in first.argstr


def test_uprobe_unknown_symbol_is_clear(ctarget):
    with registry.ProbeSet(GROUP) as ps:
        with pytest.raises(ProbeError, match="no function matches 'nosuch_fn'"):
            ps.add_trace(0, [f"probe:{ctarget}:nosuch_fn"])
        with pytest.raises(ProbeError, match="no such file|No such file"):
            ps.add_trace(0, ["probe:/nonexistent/bin:main"])


def test_bad_fetcharg_shows_the_kernels_reason(ctarget):
    with registry.ProbeSet(GROUP) as ps:
        with pytest.raises(ProbeError, match="(?s)kernel refused.*Invalid register name"):
            ps.add_trace(0, [f"probe:{ctarget}:ktap_add x=%nosuchreg"])
    assert uprobe.list_defined(GROUP) == []


def test_sdt_marker_fires_with_arguments(ctarget):
    real = os.path.realpath(ctarget)
    assert sorted(uprobe.list_markers(ctarget)) == [f"sdt:{real}:ktaptest:guarded",
                                            f"sdt:{real}:ktaptest:tick"]
    with registry.ProbeSet(GROUP) as ps:
        descs = ps.add_trace(0, [f"sdt:{ctarget}:tick"])
        assert descs[0].kind == "sdt" and descs[0].probename == "tick"
        rs = RingSet(ps.opened, pages=16)
        rs.enable()
        subprocess.run([ctarget, "calls", "4"], check=True)
        seen: list = []
        rs.finish(seen.append)
        rs.close()
    assert [(e.field("arg1"), e.field("arg2")) for e in seen] == [(i, i * 1000) for i in range(4)]


def test_sdt_semaphore_is_raised_while_traced(ctarget):
    """ref_ctr_offset: the kernel increments the marker's semaphore while probed."""
    proc, _pid = _start(ctarget, "guarded", "2")
    _go(proc)
    assert proc.stdout.readline().strip() == "0"
    with registry.ProbeSet(GROUP) as ps:
        ps.add_trace(0, [f"sdt:{ctarget}:ktaptest:guarded"])
        rs = RingSet(ps.opened, pages=8)
        rs.enable()
        _go(proc)
        assert proc.stdout.readline().strip() == "1"
        proc.wait()
        seen: list = []
        rs.finish(seen.append)
        rs.close()
    assert [e.probename for e in seen] == ["guarded"]


def test_list_functions(ctarget):
    listing = uprobe.list_functions(ctarget)
    assert f"probe:{os.path.realpath(ctarget)}:ktap_add" in listing


def test_tick_fires_about_ten_times_a_second():
    from protocol.bytecode.program import Probe

    with registry.ProbeSet(GROUP) as ps:
        descs = ps.add_probe(5, Probe(kind="tick", period_ns=100_000_000))
        assert descs[0].probename == "tick-100ms"
        rs = RingSet(ps.opened, pages=8)
        rs.enable()
        start = time.monotonic()
        seen = _collect(rs, timeout=1.05)
        elapsed = time.monotonic() - start
        rs.close()
    assert {e.tag for e in seen} == {5}
    assert 8 <= len(seen) <= 12, (len(seen), elapsed)
    gaps = [(b.time_ns - a.time_ns) / 1e6 for a, b in zip(seen, seen[1:], strict=False)]
    # delivery times: a reader stalled by other jobs on this VM shifts one tick
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(100, abs=5), gaps
    assert all(40 <= g <= 160 for g in gaps), gaps


def test_profile_fires_on_every_cpu():
    with registry.ProbeSet(GROUP) as ps:
        ps.add_timer(6, "profile", 1_000_000, callchain=True)
        rs = RingSet(ps.opened, pages=16)
        rs.enable()
        cpus = online_cpus()
        # Only a running CPU samples on these VMs: spin on each one in turn.
        saved = os.sched_getaffinity(0)
        try:
            for cpu in cpus:
                os.sched_setaffinity(0, {cpu})
                end = time.monotonic() + 0.1
                while time.monotonic() < end:
                    pass
        finally:
            os.sched_setaffinity(0, saved)
        seen = _collect(rs, timeout=0.1)
        rs.finish(seen.append)
        rs.close()
    assert len(seen) > 50 * len(cpus)
    assert {e.cpu for e in seen} == set(cpus)
    mine = [e for e in seen if e.pid == os.getpid()]
    assert mine and any(e.user_stack() for e in mine)
    kernel_frames = [f for e in seen for f in e.kernel_stack()]
    assert kernel_frames and all("+0x" in f for f in kernel_frames[:20])


def test_losses_are_counted_exactly(ctarget):
    n = 200_000
    proc, pid = _start(ctarget, "wait-getppid", str(n))
    with registry.ProbeSet(GROUP) as ps:
        ps.add_trace(0, ["syscalls:sys_enter_getppid"], filter=f"common_pid == {pid}")
        rs = RingSet(ps.opened, pages=1)  # 4 KiB: cannot keep up without draining
        rs.enable()
        _go(proc)
        proc.wait()
        seen: list = []
        rs.finish(seen.append)
        rs.close()
    # (PERF_RECORD_LOST alone would report too little here: the kernel writes
    # it only when a later record fits, and none came after the burst.)
    assert rs.lost > n // 2
    assert len(seen) + rs.lost == n  # every call delivered or counted lost


def test_inherit_counts_children(ctarget):
    proc, pid = _start(ctarget, "fork-getppid", "300")
    with registry.ProbeSet(GROUP, pid=pid) as ps:
        ps.add_trace(0, ["syscalls:sys_enter_getppid"])
        rs = RingSet(ps.opened, pages=16)
        rs.enable()
        _go(proc)
        proc.wait()
        seen: list = []
        rs.finish(seen.append)
        rs.close()
    assert len(seen) == 300 and {e.tgid for e in seen} != {pid}  # all from the child


def test_cpu_restriction(ctarget):
    with registry.ProbeSet(GROUP, cpu=0) as ps:
        ps.add_timer(0, "profile", 1_000_000)
        rs = RingSet(ps.opened, pages=16)
        rs.enable()
        saved = os.sched_getaffinity(0)
        try:
            for cpu in online_cpus():
                os.sched_setaffinity(0, {cpu})
                end = time.monotonic() + 0.05
                while time.monotonic() < end:
                    pass
        finally:
            os.sched_setaffinity(0, saved)
        seen: list = []
        rs.finish(seen.append)
        rs.close()
    assert seen and {e.cpu for e in seen} == {0}


def test_kprobes_absent_is_a_clear_error():
    if kprobe.available():
        pytest.skip("this kernel has kprobe events; the absence message cannot be tested")
    with registry.ProbeSet(GROUP) as ps:
        with pytest.raises(ProbeError, match="this kernel has no kprobe events"):
            ps.add_trace(0, ["probe:do_sys_openat2 dfd=%di"])


def test_function_tracer_absent_is_a_clear_error():
    if registry._function_tracer_usable():
        pytest.skip("the function tracer is usable here")
    with registry.ProbeSet(GROUP) as ps:
        with pytest.raises(ProbeError, match="function tracer is not usable"):
            ps.add_trace(0, ["ftrace:function"])


def test_cleanup_stale_removes_leftovers(ctarget):
    stale = GROUP + "_stale"  # (the daemon passes no prefix: every ktapd_ group goes)
    offset = uprobe.elf_functions(ctarget)["other_fn"]
    uprobe.define(stale, "other_fn", os.path.realpath(ctarget), offset, False)
    assert (stale, "other_fn") in uprobe.list_defined()
    removed = registry.cleanup_stale(stale)
    assert removed == [f"{stale}/other_fn"]
    assert uprobe.list_defined(stale) == []


def test_unprivileged_worker_reads_fds_opened_by_root():
    """The daemon/worker split: root opens and sends plain data + fds; a forked
    process that dropped to uid/gid 65534 maps the rings and decodes."""
    n = 300
    me = os.getpid()
    with registry.ProbeSet(GROUP) as ps:
        ps.add_trace(0, ["syscalls:sys_enter_getppid"], filter=f"common_pid == {me}")
        ps.add_timer(1, "tick", 10_000_000)
        doc = json.dumps(ps.opened.to_wire())  # what would travel over the socket
        fds = list(ps.opened.fds)
        go_r, go_w = os.pipe()
        out_r, out_w = os.pipe()
        child = os.fork()
        if child == 0:  # the worker
            status = 1
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                rs = RingSet(OpenedEvents.from_wire(json.loads(doc), fds), pages=8)
                rs.enable()
                os.write(out_w, b"ready %d\n" % os.getuid())
                os.read(go_r, 1)
                seen: list = []
                rs.finish(seen.append)
                result = {"n": sum(1 for e in seen if e.tid == me and e.tag == 0),
                          "ticks": sum(1 for e in seen if e.tag == 1)}
                os.write(out_w, json.dumps(result).encode() + b"\n")
                status = 0
            finally:
                os._exit(status)
        with os.fdopen(out_r) as out:
            assert out.readline().split() == ["ready", "65534"]
            for _ in range(n):
                os.getppid()
            time.sleep(0.05)
            os.write(go_w, b"x")
            result = json.loads(out.readline())
        _pid, status = os.waitpid(child, 0)
        assert status == 0
    assert result["n"] == n
    assert result["ticks"] >= 1


def test_argstr_of_sched_events_matches_trace_pipe(ctarget):
    """print-fmt rendering (sched_process_fork, sched_process_exit with its ternary,
    sched_switch with __print_flags) against the kernel's own trace output."""
    root = tracefs.root()
    names = ["sched_process_fork", "sched_process_exit", "sched_switch"]
    proc, pid = _start(ctarget, "fork-getppid", "20000")
    filt = f"common_pid == {pid}"
    (root / "trace").write_text("")
    with registry.ProbeSet(GROUP) as ps:
        ps.add_trace(0, [f"sched:{n}" for n in names], filter=filt)
        rs = RingSet(ps.opened, pages=16)
        rs.enable()
        for n in names:
            (root / f"events/sched/{n}/filter").write_text(filt)
            (root / f"events/sched/{n}/enable").write_text("1")
        (root / "tracing_on").write_text("1")
        try:
            _go(proc)
            proc.wait()
        finally:
            (root / "tracing_on").write_text("0")
            for n in names:
                (root / f"events/sched/{n}/enable").write_text("0")
                (root / f"events/sched/{n}/filter").write_text("0")
        seen: list = []
        rs.finish(seen.append)
        rs.close()
    trace = (root / "trace").read_text()
    (root / "trace").write_text("")
    kernel = [line.split(": ", 2)[2].strip() for line in trace.splitlines()
              if any(f": {n}: " in line for n in names)]
    ours = [e.argstr for e in sorted(seen, key=lambda e: e.time_ns)]
    assert {e.probename for e in seen} >= {"sched_process_fork", "sched_process_exit"}
    assert ours == kernel


def test_close_reports_uprobes_still_held_by_a_reader(ctarget):
    ps = registry.ProbeSet(GROUP)
    ps.add_trace(0, [f"probe:{ctarget}:other_fn"])
    worker_view = OpenedEvents.from_wire(ps.opened.to_wire(), [os.dup(fd) for fd in
                                                               ps.opened.fds])
    rs = RingSet(worker_view, pages=4)  # a worker still holding fds and rings
    assert ps.close() == [f"{GROUP}/other_fn"]
    assert uprobe.list_defined(GROUP) == [(GROUP, "other_fn")]
    rs.close()
    assert worker_view.fds == []
    assert ps.close() == []
    assert uprobe.list_defined(GROUP) == []
