"""Fixtures for the probe layer's real-kernel tests.

``probes_kernel``: root, tracefs mounted, perf_event_open usable; else skip
(or fail under KTAP_REQUIRE_KERNEL=1, through tests/conftest.py's
require_kernel).  ``ctarget``: a small C program compiled once per run,
with functions to uprobe, an SDT marker written by hand (no <sys/sdt.h>
needed) and modes for the per-task, openat and paced-syscall tests.  At
the end of the session, no dynamic event of ours may be left in
uprobe_events.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess

import pytest

_spec = importlib.util.spec_from_file_location(
    "ktap_tests_root_conftest", pathlib.Path(__file__).resolve().parent.parent / "conftest.py")
_root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root_conftest)
require_kernel = _root_conftest.require_kernel

# Every dynamic-event group these tests create starts with this.
OUR_GROUP_PREFIX = f"ktapd_t{os.getpid()}"

CTARGET_SOURCE = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What <sys/sdt.h> emits for STAP_PROBE2, written out: a nop at the probe
   site and a .note.stapsdt entry (pc, base, semaphore, provider, name, args). */
/* A marker guarded by a semaphore, as sdt.h does with -DSDT_USE_SEMAPHORES:
   the kernel bumps the counter (uprobe ref_ctr_offset) while it is traced. */
__extension__ unsigned short ktaptest_guarded_semaphore
    __attribute__((unused)) __attribute__((section(".probes")));
#define KTAP_SDT_GUARDED()                                                        \
  __asm__ __volatile__(                                                           \
      "990: nop\n"                                                                \
      ".pushsection .note.stapsdt,\"?\",\"note\"\n"                              \
      ".balign 4\n"                                                               \
      ".4byte 992f-991f, 994f-993f, 3\n"                                          \
      "991: .asciz \"stapsdt\"\n"                                                 \
      "992: .balign 4\n"                                                          \
      "993: .8byte 990b\n"                                                        \
      ".8byte _.stapsdt.base\n"                                                   \
      ".8byte ktaptest_guarded_semaphore\n"                                       \
      ".asciz \"ktaptest\"\n"                                                     \
      ".asciz \"guarded\"\n"                                                      \
      ".asciz \"\"\n"                                                              \
      "994: .balign 4\n"                                                          \
      ".popsection\n")

#define KTAP_SDT2(provider, name, a1, a2)                                        \
  __asm__ __volatile__(                                                           \
      "990: nop\n"                                                                \
      ".pushsection .note.stapsdt,\"?\",\"note\"\n"                              \
      ".balign 4\n"                                                               \
      ".4byte 992f-991f, 994f-993f, 3\n"                                          \
      "991: .asciz \"stapsdt\"\n"                                                 \
      "992: .balign 4\n"                                                          \
      "993: .8byte 990b\n"                                                        \
      ".8byte _.stapsdt.base\n"                                                   \
      ".8byte 0\n"                                                                \
      ".asciz \"" #provider "\"\n"                                                \
      ".asciz \"" #name "\"\n"                                                    \
      ".asciz \"-4@%0 8@%1\"\n"                                                   \
      "994: .balign 4\n"                                                          \
      ".popsection\n"                                                             \
      ".ifndef _.stapsdt.base\n"                                                  \
      ".pushsection .stapsdt.base,\"aG\",\"progbits\",.stapsdt.base,comdat\n"     \
      ".weak _.stapsdt.base\n"                                                    \
      ".hidden _.stapsdt.base\n"                                                  \
      "_.stapsdt.base: .space 1\n"                                                \
      ".size _.stapsdt.base, 1\n"                                                 \
      ".popsection\n"                                                             \
      ".endif\n"                                                                  \
      :: "r"((int)(a1)), "r"((long)(a2)))

__attribute__((noinline)) long ktap_add(long a, long b) { __asm__ volatile(""); return a + b; }
__attribute__((noinline)) long ktap_sub(long a, long b) { __asm__ volatile(""); return a - b; }
__attribute__((noinline)) long other_fn(long a) { __asm__ volatile(""); return a * 3; }

static void wait_go(void) {
  char line[16];
  if (!fgets(line, sizeof line, stdin)) exit(2);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  const char *mode = argv[1];
  long n = argc > 2 ? atol(argv[2]) : 1;
  long total = 0;
  if (!strcmp(mode, "calls")) {          /* calls N: uprobe targets and the SDT marker */
    for (long i = 0; i < n; i++) {
      total += ktap_add(i, 100);
      KTAP_SDT2(ktaptest, tick, i, i * 1000);
    }
    total += ktap_sub(5, 3) + other_fn(1);
  } else if (!strcmp(mode, "fork-getppid")) {  /* like wait-getppid, from a child process */
    printf("%d\n", getpid());
    fflush(stdout);
    wait_go();
    pid_t child = fork();
    if (child == 0) {
      for (long i = 0; i < n; i++) syscall(SYS_getppid);
      _exit(0);
    }
    waitpid(child, NULL, 0);
  } else if (!strcmp(mode, "wait-getppid")) {  /* attach first, then N getppid, then exit */
    printf("%d\n", getpid());
    fflush(stdout);
    wait_go();
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
  } else if (!strcmp(mode, "guarded")) {  /* print pid; per "go": print semaphore, fire */
    printf("%d\n", getpid());
    fflush(stdout);
    for (long i = 0; i < n; i++) {
      wait_go();
      printf("%d\n", (int)ktaptest_guarded_semaphore);
      fflush(stdout);
      if (ktaptest_guarded_semaphore) KTAP_SDT_GUARDED();
    }
  } else if (!strcmp(mode, "wait-open")) {  /* print pid, wait, open argv[2], wait, exit */
    printf("%d\n", getpid());
    fflush(stdout);
    wait_go();
    int fd = openat(AT_FDCWD, argv[2], O_RDONLY);
    if (fd >= 0) close(fd);
    wait_go();
  } else if (!strcmp(mode, "open")) {    /* open argv[2] once; with argv[3], then wait */
    int fd = openat(AT_FDCWD, argv[2], O_RDONLY);
    if (fd >= 0) close(fd);
    if (argc > 3) wait_go();
  } else if (!strcmp(mode, "getppid")) { /* getppid N [RATE per second, spin-paced] */
    double rate = argc > 3 ? atof(argv[3]) : 0, start = now();
    for (long i = 0; i < n; i++) {
      syscall(SYS_getppid);
      if (rate > 0 && (i & 63) == 0)
        while (now() - start < i / rate) ;
    }
    printf("%.6f\n", now() - start);
  } else {
    return 2;
  }
  return (int)(total & 0);
}
"""


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        from ktapd.probes import tracefs

        tracefs.ensure_mounted()
    except OSError as exc:
        return f"no tracefs: {exc}"
    return None


@pytest.fixture(scope="session")
def probes_kernel():
    reason = _unavailable()
    if reason:
        require_kernel(reason)


@pytest.fixture(scope="session")
def ctarget(tmp_path_factory, probes_kernel) -> str:
    if shutil.which("gcc") is None:
        require_kernel("gcc is not installed")
    out = tmp_path_factory.mktemp("ctarget")
    src = out / "ctarget.c"
    src.write_text(CTARGET_SOURCE)
    binary = out / "ctarget"
    subprocess.run(["gcc", "-O2", "-g", "-o", str(binary), str(src)], check=True)
    os.chmod(out, 0o755)
    return str(binary)


@pytest.fixture(scope="session", autouse=True)
def no_leftover_dynamic_events():
    yield
    if _unavailable():
        return
    from ktapd.probes import uprobe

    # Only our own groups: other test runs on this machine may hold theirs.
    left = uprobe.list_defined(OUR_GROUP_PREFIX)
    assert not left, f"dynamic events left behind in uprobe_events: {left}"
