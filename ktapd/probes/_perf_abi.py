"""The kernel ABI of perf_event_open(2), in one place: numbers, layouts, raw calls.

Everything here is copied from include/uapi/linux/perf_event.h (and the
x86-64 syscall table) and written as Python data: attr field offsets,
flag bits, sample_type bits, record types, ioctl numbers, the layout of
the mmap control page.  The three raw calls that Python's os module lacks
(perf_event_open, process_vm_readv, ioctl with a pointer or an integer
argument) go through ctypes here, so no other module needs ctypes except
perf_event.py.

This module must not keep state, open events by itself or know what a
probe is; it only translates between Python values and the kernel's ABI.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

# --- syscall numbers (x86-64; aarch64 uses the generic table) ---------------
_SYSCALLS = {
    "x86_64": {"perf_event_open": 298, "process_vm_readv": 310},
    "aarch64": {"perf_event_open": 241, "process_vm_readv": 270},
}
NR = _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])

# --- perf_event_attr.type ----------------------------------------------------
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2

# perf_sw_ids
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_TASK_CLOCK = 1

# --- sample_type bits ---------------------------------------------------------
PERF_SAMPLE_IP = 1 << 0
PERF_SAMPLE_TID = 1 << 1
PERF_SAMPLE_TIME = 1 << 2
PERF_SAMPLE_ID = 1 << 6
PERF_SAMPLE_CPU = 1 << 7
PERF_SAMPLE_PERIOD = 1 << 8
PERF_SAMPLE_CALLCHAIN = 1 << 5
PERF_SAMPLE_RAW = 1 << 10
PERF_SAMPLE_IDENTIFIER = 1 << 16

# --- the flags bitfield (one u64 at offset 40) --------------------------------
ATTR_FLAG_BITS = {
    "disabled": 0,
    "inherit": 1,
    "pinned": 2,
    "exclusive": 3,
    "exclude_user": 4,
    "exclude_kernel": 5,
    "exclude_hv": 6,
    "exclude_idle": 7,
    "mmap": 8,
    "comm": 9,
    "freq": 10,
    "inherit_stat": 11,
    "enable_on_exec": 12,
    "task": 13,
    "watermark": 14,
    "sample_id_all": 18,
    "exclude_callchain_kernel": 21,
    "exclude_callchain_user": 22,
    "comm_exec": 24,
}

# --- perf_event_attr: PERF_ATTR_SIZE_VER8, fields at their fixed offsets ------
PERF_ATTR_SIZE = 136
_ATTR_FIELDS = {
    # name: (offset, struct code)
    "type": (0, "I"),
    "size": (4, "I"),
    "config": (8, "Q"),
    "sample_period": (16, "Q"),
    "sample_type": (24, "Q"),
    "read_format": (32, "Q"),
    "flags": (40, "Q"),
    "wakeup_watermark": (48, "I"),  # union with wakeup_events
    "config1": (56, "Q"),  # uprobe_path for the uprobe PMU
    "config2": (64, "Q"),  # probe_offset for the uprobe PMU
    "sample_max_stack": (108, "H"),
}


def pack_attr(**values: int) -> bytes:
    """A perf_event_attr with the given fields (``flags`` as a dict of bit names
    is accepted through ``flag_names``); unnamed fields are zero."""
    buf = bytearray(PERF_ATTR_SIZE)
    values.setdefault("size", PERF_ATTR_SIZE)
    for name, value in values.items():
        offset, code = _ATTR_FIELDS[name]
        struct.pack_into("<" + code, buf, offset, value)
    return bytes(buf)


def attr_flags(*names: str) -> int:
    bits = 0
    for name in names:
        bits |= 1 << ATTR_FLAG_BITS[name]
    return bits


PERF_FLAG_FD_CLOEXEC = 1 << 3

# --- ioctls (_IO/_IOW/_IOR on type '$') ---------------------------------------
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_OUTPUT = 0x2405
PERF_EVENT_IOC_SET_FILTER = 0x40082406
PERF_EVENT_IOC_ID = 0x80082407

# --- ring buffer records --------------------------------------------------------
PERF_RECORD_LOST = 2
PERF_RECORD_COMM = 3
PERF_RECORD_EXIT = 4
PERF_RECORD_FORK = 7
PERF_RECORD_SAMPLE = 9
PERF_RECORD_LOST_SAMPLES = 13

PERF_RECORD_MISC_COMM_EXEC = 1 << 13

# Callchain context markers (values of ips[] >= PERF_CONTEXT_MAX).
PERF_CONTEXT_KERNEL = 0xFFFFFFFFFFFFFF80  # (u64)-128
PERF_CONTEXT_USER = 0xFFFFFFFFFFFFFE00  # (u64)-512
PERF_CONTEXT_MAX = 0xFFFFFFFFFFFFF001  # (u64)-4095

# struct perf_event_mmap_page: offsets in the first (control) page.
MMAP_DATA_HEAD = 1024
MMAP_DATA_TAIL = 1032
MMAP_DATA_OFFSET = 1040
MMAP_DATA_SIZE = 1048

# --- raw calls ---------------------------------------------------------------------
# The C library is already mapped into the interpreter: CDLL(None) finds its
# symbols without ctypes.util.find_library, which runs `ldconfig -p` (a
# process start in every worker).
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_ioctl = _libc.ioctl
_ioctl.restype = ctypes.c_int
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)


def _check(result: int) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def perf_event_open(attr: bytes, pid: int, cpu: int, group_fd: int = -1,
                    flags: int = PERF_FLAG_FD_CLOEXEC) -> int:
    buf = ctypes.create_string_buffer(attr, len(attr))
    return _check(_syscall(ctypes.c_long(NR["perf_event_open"]), buf, ctypes.c_int(pid),
                           ctypes.c_int(cpu), ctypes.c_int(group_fd), ctypes.c_ulong(flags)))


def ioctl_int(fd: int, request: int, arg: int = 0) -> int:
    return _check(_ioctl(fd, request, ctypes.c_void_p(arg)))


def ioctl_set_filter(fd: int, text: str) -> None:
    buf = ctypes.create_string_buffer(text.encode())
    _check(_ioctl(fd, PERF_EVENT_IOC_SET_FILTER, ctypes.cast(buf, ctypes.c_void_p)))


def ioctl_event_id(fd: int) -> int:
    value = ctypes.c_uint64(0)
    _check(_ioctl(fd, PERF_EVENT_IOC_ID, ctypes.cast(ctypes.byref(value), ctypes.c_void_p)))
    return value.value


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def process_vm_readv(pid: int, addr: int, length: int) -> bytes:
    """Read up to ``length`` bytes at ``addr`` in process ``pid``; may return fewer
    (a read stops at the first unmapped page).  Raises OSError when nothing
    is readable."""
    buf = ctypes.create_string_buffer(length)
    local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), length)
    remote = _IoVec(ctypes.c_void_p(addr), length)
    got = _check(_syscall(ctypes.c_long(NR["process_vm_readv"]), ctypes.c_int(pid),
                          ctypes.byref(local), ctypes.c_ulong(1), ctypes.byref(remote),
                          ctypes.c_ulong(1), ctypes.c_ulong(0)))
    return buf.raw[:got]


# --- timerfd (tick-N timers; os.timerfd_* only exists from Python 3.13) -----------------
CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


class _TimeSpec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("interval", _TimeSpec), ("value", _TimeSpec)]


def timerfd_create() -> int:
    return _check(_libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC))


def timerfd_settime(fd: int, period_ns: int) -> None:
    """Arm ``fd`` to expire every ``period_ns`` (0 disarms it)."""
    spec = divmod(period_ns, 1_000_000_000)
    its = _ITimerSpec(_TimeSpec(*spec), _TimeSpec(*spec))
    _check(_libc.timerfd_settime(fd, 0, ctypes.byref(its), None))


def current_cpu() -> int:
    """The CPU this thread runs on now (sched_getcpu(3))."""
    cpu = _libc.sched_getcpu()
    return cpu if cpu >= 0 else 0
