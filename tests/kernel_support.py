"""Kernel-test helpers shared by every test folder (import as ``kernel_support``).

Kernel tests need root and the real kernel.  Where they cannot run they
skip with a reason, except under ``KTAP_REQUIRE_KERNEL=1`` (set by
.ci/run), where a skip would hide that a kernel path never ran, so it
fails instead.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_KERNEL = os.environ.get("KTAP_REQUIRE_KERNEL") == "1"


def require_kernel(reason: str) -> None:
    """Skip (or, in CI, fail) a kernel test that cannot run here."""
    if REQUIRE_KERNEL:
        pytest.fail(f"kernel test could not run (KTAP_REQUIRE_KERNEL=1): {reason}")
    pytest.skip(reason)


def kernel_unavailable_reason() -> str | None:
    """Why kernel tests cannot run on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/sys/kernel/tracing") and not os.path.exists("/sys/kernel/debug"):
        return "no tracefs on this kernel"
    return None
