"""The probe layer: kernel events in, decoded events out (DESIGN.md, ktapd/probes).

The only code that touches perf fds, mmap and tracefs.  It knows nothing of
sessions or the VM: callers pass an opaque integer ``tag`` with each probe
and get it back on every event.  The API comes in two halves with only
plain data and file descriptors between them (DESIGN decision 6).

Privileged side (the daemon, root)::

    registry.cleanup_stale()                      # at daemon start: remove ktapd_* leftovers
    ps = registry.ProbeSet("ktapd_<session>", pid=None, cpu=None)
    descs = ps.add_probe(tag, program_probe, callchain=False)   # or add_trace / add_timer
    ps.descs[i].arg_names                         # check args.NAME at load time
    doc, fds = ps.opened.to_wire(), ps.opened.fds # msgpack-able dict + fds (SCM_RIGHTS)
    ps.close()                                    # session end: close fds, remove uprobes
    registry.list_events(glob), uprobe.list_functions(dso), uprobe.list_markers(dso)

Unprivileged side (the worker)::

    rs = perf_event.RingSet(perf_event.OpenedEvents.from_wire(doc, fds))
    rs.enable()
    rs.filenos(); rs.wait_limit(timeout)          # for trio.lowlevel.wait_readable
    rs.poll(timeout); rs.drain(handler)           # handler(event) per sample / tick
    rs.exited                                     # pids whose process exited (-p)
    rs.finish(handler); rs.lost; rs.close()       # stop: last drain, exact loss count

Modules: _perf_abi (ctypes, constants), perf_event (open, rings), tracefs,
formats (format files, decoding), argstr, events (EventDesc, Event),
registry (probe kinds, ProbeSet), uprobe (ELF, SDT), kprobe, timers,
symbols (kallsyms, user maps).

This package must not import the VM, sessions or the server.
"""
